// Derives JSON Schemas for the Northflank requests prefect-nf sends and the answers the emulator
// gives, from the TypeScript types of the pinned official client (@northflank/js-client, see
// package.json and package-lock.json), and writes them to emulator/schema/northflank.json.
//
//   cd scripts/nf-schema && npm ci --ignore-scripts && node generate.mjs
//
// The types are read syntactically with the TypeScript parser: every object type becomes a
// closed JSON Schema object (`additionalProperties: false`), `?` makes a property optional, and
// `null` is allowed only where the type says `| null`. The runtime is read once, for the query
// parameters of the logs endpoint, which the client builds in code rather than from a type.
//
// One rule needs a word: a union that has `any` beside typed objects (`PutJobData.deployment`
// is `vcs | external | internal | any`; Northflank's spec has an untyped fourth branch) is
// written as the typed branches plus `"x-untyped-alternative": true`, so a reader can tell the
// official type would accept anything there. Both consumers (the emulator and check.py) hold a
// body to the typed branches: our renderer always sends one of them, and a misspelled field
// must not hide in the untyped one.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const here = path.dirname(fileURLToPath(import.meta.url));
// The package's `exports` hide its package.json, so it is found where npm installs it.
const pkgDir = path.join(here, 'node_modules', '@northflank', 'js-client');
const pkg = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
const lock = JSON.parse(fs.readFileSync(path.join(here, 'package-lock.json'), 'utf8'));
const out = path.join(here, '..', '..', 'emulator', 'schema', 'northflank.json');

// The endpoints the worker and the emulator use: the key is the emulator's endpoint key
// (`Counters::requests`), the names are the client's types.
const P = '/v1/projects/{projectId}/jobs';
const N = '/v1/integrations/notifications';
const ENDPOINTS = {
  [`POST ${P}`]: { request: 'CreateJobData', response: 'CreateJobResult' },
  [`PUT ${P}`]: { request: 'PutJobData', response: 'PutJobResult' },
  [`GET ${P}`]: { response: 'ListJobsResult', query: 'ListJobsOptions' },
  [`GET ${P}/{jobId}`]: { response: 'GetJobResult' },
  [`DELETE ${P}/{jobId}`]: { response: 'DeleteJobResult' },
  [`POST ${P}/{jobId}/runs`]: { request: 'StartJobRunData', response: 'StartJobRunResult' },
  [`GET ${P}/{jobId}/runs`]: { response: 'GetJobRunsResult', query: 'GetJobRunsOptions' },
  [`GET ${P}/{jobId}/runs/{runId}`]: { response: 'GetJobRunResult' },
  [`DELETE ${P}/{jobId}/runs/{runId}`]: { response: 'AbortJobRunResult' },
  [`GET ${P}/{jobId}/containers`]: {
    response: 'GetJobContainersResult',
    query: 'GetJobContainersOptions',
  },
  [`GET ${P}/{jobId}/logs`]: { response: 'LogLine[]', query: 'logs' },
  [`POST ${N}`]: { request: 'CreateNotificationData', response: 'CreateNotificationResult' },
  [`GET ${N}`]: { response: 'ListNotificationsResult', query: 'ListNotificationsOptions' },
  [`GET ${N}/{notificationId}`]: { response: 'GetNotificationResult' },
  [`POST ${N}/{notificationId}`]: {
    request: 'UpdateNotificationData',
    response: 'UpdateNotificationResult',
  },
  [`DELETE ${N}/{notificationId}`]: { response: 'DeleteNotificationResult' },
};

const dts = path.join(pkgDir, 'dist', 'esm', 'api-client.d.ts');
const source = ts.createSourceFile(dts, fs.readFileSync(dts, 'utf8'), ts.ScriptTarget.Latest);
const aliases = new Map();
const enums = new Map();
for (const node of source.statements) {
  if (ts.isTypeAliasDeclaration(node)) aliases.set(node.name.text, node.type);
  if (ts.isEnumDeclaration(node)) enums.set(node.name.text, node);
}

function fail(node, why) {
  const { line } = source.getLineAndCharacterOfPosition(node.getStart(source));
  throw new Error(`${path.basename(dts)}:${line + 1}: ${why}: ${node.getText(source).slice(0, 80)}`);
}

const isAny = (s) => Object.keys(s).length === 0;

function objectSchema(members) {
  const properties = {};
  const required = [];
  for (const m of members) {
    if (!ts.isPropertySignature(m)) fail(m, 'only properties are expected in a request or answer type');
    const name = m.name.text;
    properties[name] = convert(m.type);
    if (!m.questionToken) required.push(name);
  }
  const schema = { type: 'object', properties, additionalProperties: false };
  if (required.length) schema.required = required;
  return schema;
}

function union(node) {
  const parts = node.types.map(convert);
  const untyped = parts.some(isAny);
  const typed = parts.filter((s) => !isAny(s) && !(s.type === 'undefined'));
  if (untyped && !typed.some((s) => s.type === 'object')) return {};
  // Literal unions become one enum; `string | 'latest'` is just a string.
  if (typed.every((s) => 'const' in s || s.type === 'null')) {
    return { enum: typed.map((s) => ('const' in s ? s.const : null)) };
  }
  const plain = typed.filter((s) => !('const' in s && typed.some((o) => o.type === typeof s.const)));
  const nullable = plain.some((s) => s.type === 'null');
  const rest = plain.filter((s) => s.type !== 'null');
  let schema;
  if (rest.length === 1 && !nullable) schema = rest[0];
  else if (rest.length === 1 && typeof rest[0].type === 'string' && rest[0].type !== 'object') {
    schema = { ...rest[0], type: [rest[0].type, 'null'] };
  } else schema = { anyOf: nullable ? [...rest, { type: 'null' }] : rest };
  if (untyped) schema = { ...schema, 'x-untyped-alternative': true };
  return schema;
}

function reference(node) {
  const name = node.typeName.getText(source);
  if (name === 'Date') return { type: 'string', format: 'date-time' };
  if (enums.has(name)) {
    return { enum: enums.get(name).members.map((m) => m.initializer.text) };
  }
  if (aliases.has(name)) return convert(aliases.get(name));
  return fail(node, `unknown type ${name}`);
}

function convert(node) {
  switch (node.kind) {
    case ts.SyntaxKind.TypeLiteral:
      return objectSchema(node.members);
    case ts.SyntaxKind.UnionType:
      return union(node);
    case ts.SyntaxKind.ArrayType:
      return { type: 'array', items: convert(node.elementType) };
    case ts.SyntaxKind.ParenthesizedType:
      return convert(node.type);
    case ts.SyntaxKind.TypeReference:
      return reference(node);
    case ts.SyntaxKind.StringKeyword:
      return { type: 'string' };
    case ts.SyntaxKind.NumberKeyword:
      return { type: 'number' };
    case ts.SyntaxKind.BooleanKeyword:
      return { type: 'boolean' };
    case ts.SyntaxKind.AnyKeyword:
    case ts.SyntaxKind.UnknownKeyword:
      return {};
    case ts.SyntaxKind.UndefinedKeyword:
      return { type: 'undefined' };
    case ts.SyntaxKind.LiteralType: {
      const lit = node.literal;
      if (lit.kind === ts.SyntaxKind.NullKeyword) return { type: 'null' };
      if (ts.isStringLiteral(lit)) return { const: lit.text };
      if (lit.kind === ts.SyntaxKind.TrueKeyword) return { const: true };
      if (lit.kind === ts.SyntaxKind.FalseKeyword) return { const: false };
      return fail(node, 'unexpected literal');
    }
    default:
      return fail(node, `unexpected type syntax ${ts.SyntaxKind[node.kind]}`);
  }
}

function named(name) {
  if (name.endsWith('[]')) return { type: 'array', items: named(name.slice(0, -2)) };
  if (!aliases.has(name)) throw new Error(`the client has no type ${name}`);
  return convert(aliases.get(name));
}

// The logs endpoint's query is built in code (`LogsClient.getLogsEndpoint`): every
// `URLSearchParams.append("<name>", …)` there is a parameter the client can send.
function logsQuery() {
  const js = fs.readFileSync(path.join(pkgDir, 'dist', 'esm', 'api-client.js'), 'utf8');
  const start = js.indexOf('getLogsEndpoint=function');
  const end = js.indexOf('"?").concat(', start);
  if (start < 0 || end < 0) throw new Error('getLogsEndpoint not found in the client runtime');
  const names = [...js.slice(start, end).matchAll(/\.append\("([A-Za-z]+)"/g)].map((m) => m[1]);
  if (!names.includes('queryType')) throw new Error('getLogsEndpoint sends no queryType');
  // `queryType` is always sent: "range" for a log query (`logRange`), "tail" for the WebSocket.
  return { parameters: [...new Set(names)], required: { queryType: 'range' } };
}

function query(name) {
  if (name === 'logs') return logsQuery();
  return { parameters: Object.keys(named(name).properties), required: {} };
}

const endpoints = {};
for (const [key, e] of Object.entries(ENDPOINTS)) {
  const entry = {};
  if (e.request) entry.request = { type: e.request, schema: named(e.request) };
  entry.response = { type: e.response, schema: named(e.response) };
  if (e.query) entry.query = query(e.query);
  endpoints[key] = entry;
}

const locked = lock.packages['node_modules/@northflank/js-client'];
const document = {
  $comment:
    'Generated by scripts/nf-schema/generate.mjs from the types of the official Northflank client; do not edit (see emulator/README.md, "Fidelity").',
  package: pkg.name,
  version: pkg.version,
  integrity: locked.integrity,
  endpoints,
};
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, `${JSON.stringify(document, null, 1)}\n`);
console.log(`wrote ${path.relative(process.cwd(), out)}: ${Object.keys(endpoints).length} endpoints from ${pkg.name} ${pkg.version}`);
