//! template.yaml, through SAM's own transform (run offline by scripts/sam_transform.py): what
//! linting cannot see, because SAM generates it.

use crate::helpers;

use serde_json::{Value, json};

fn transformed(parameters: &[&str]) -> Value {
    let out = std::process::Command::new(helpers::repo().join(".venv/bin/python"))
        .arg(helpers::repo().join("scripts/sam_transform.py"))
        .arg(helpers::repo().join("template.yaml"))
        .args([
            "PrefectApiUrl=https://api.prefect.cloud/api/accounts/a/workspaces/w",
            "WorkPool=nf",
        ])
        .args(parameters)
        .output()
        .expect("the project venv has samtranslator: run through scripts/test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn resource<'a>(t: &'a Value, name: &str) -> &'a Value {
    t["Resources"]
        .get(name)
        .unwrap_or_else(|| panic!("SAM generated no {name}"))
}

/// The statements of `role`'s policies that mention `needle`.
fn statements<'a>(t: &'a Value, role: &str, needle: &str) -> Vec<&'a Value> {
    resource(t, role)["Properties"]["Policies"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["PolicyDocument"]["Statement"].as_array().unwrap())
        .filter(|s| s.to_string().contains(needle))
        .collect()
}

/// The stack's functions: scheduled dispatch, the webhook, and instant dispatch's own.
const FUNCTIONS: [&str; 3] = [
    "DispatchFunction",
    "WebhookFunction",
    "InstantDispatchFunction",
];

fn secret_arn() -> Value {
    json!({"Fn::If": ["CreateSecret", {"Ref": "CredentialsSecret"}, {"Ref": "ExistingSecretArn"}]})
}

#[test]
fn every_function_is_arm64_rust_on_al2023_with_128_mb() {
    let t = transformed(&[]);
    for name in FUNCTIONS {
        let p = &resource(&t, name)["Properties"];
        assert_eq!(
            (p["Runtime"].as_str(), p["Handler"].as_str()),
            (Some("provided.al2023"), Some("bootstrap")),
            "{name}"
        );
        assert_eq!(p["Architectures"], json!(["arm64"]), "{name}");
        assert_eq!(p["MemorySize"], 128, "{name}");
        assert_eq!(
            p["Environment"]["Variables"]["PFNF_SECRET_ID"],
            secret_arn(),
            "{name}"
        );
        assert!(p["ReservedConcurrentExecutions"].is_object(), "{name}");
        assert_eq!(p["LoggingConfig"]["LogFormat"], "JSON");
    }
    // The dispatch timeout covers the longest poll window (60 s) plus the submission reserve.
    let timeout = resource(&t, "DispatchFunction")["Properties"]["Timeout"]
        .as_u64()
        .unwrap();
    assert!(
        timeout >= 60 + prefect_nf::dispatch::SUBMIT_RESERVE.as_secs() + 5,
        "{timeout}"
    );
}

#[test]
fn the_build_metadata_names_our_binaries() {
    let template = std::fs::read_to_string(helpers::repo().join("template.yaml")).unwrap();
    for bin in ["dispatch", "webhook"] {
        assert!(template.contains(&format!("Binary: {bin}")));
        assert!(helpers::repo().join(format!("src/bin/{bin}.rs")).exists());
    }
    assert_eq!(template.matches("BuildMethod: rust-cargolambda").count(), 3);
    // Instant dispatch runs the dispatch binary, which tells its events from the schedule's.
    let t = transformed(&[]);
    assert_eq!(
        resource(&t, "InstantDispatchFunction")["Metadata"]["BuildProperties"]["Binary"],
        "dispatch"
    );
}

#[test]
fn the_function_url_is_public_with_both_invoke_permissions() {
    let t = transformed(&[]);
    let url = &resource(&t, "WebhookFunctionUrl")["Properties"];
    assert_eq!(url["AuthType"], "NONE");
    let public = &resource(&t, "WebhookFunctionUrlPublicPermissions")["Properties"];
    assert_eq!(
        (
            public["Action"].as_str(),
            public["FunctionUrlAuthType"].as_str()
        ),
        (Some("lambda:InvokeFunctionUrl"), Some("NONE"))
    );
    let invoke = &resource(&t, "WebhookFunctionURLInvokeAllowPublicAccess")["Properties"];
    assert_eq!(
        (
            invoke["Action"].as_str(),
            invoke["InvokedViaFunctionUrl"].as_bool()
        ),
        (Some("lambda:InvokeFunction"), Some(true))
    );
    assert_eq!(
        t["Outputs"]["WebhookUrl"]["Value"],
        json!({"Fn::GetAtt": ["WebhookFunctionUrl", "FunctionUrl"]})
    );
}

#[test]
fn each_function_may_read_exactly_the_one_secret() {
    let t = transformed(&[]);
    for role in FUNCTIONS.map(|f| format!("{f}Role")) {
        let role = role.as_str();
        let statements = statements(&t, role, "secretsmanager");
        assert_eq!(statements.len(), 1, "{role}: {statements:?}");
        assert_eq!(
            statements[0]["Action"],
            json!(["secretsmanager:GetSecretValue"]),
            "{role}"
        );
        assert_eq!(
            statements[0]["Resource"],
            json!({"Fn::Sub": ["${secretArn}", {"secretArn": secret_arn()}]}),
            "{role}"
        );
    }
    assert_eq!(t["Outputs"]["SecretArn"]["Value"], secret_arn());
    // Created by the stack: the webhook token generated, the others to be filled in.
    let secret = &resource(&t, "CredentialsSecret")["Properties"];
    assert_eq!(
        secret["GenerateSecretString"]["GenerateStringKey"],
        "webhook_token"
    );
}

#[test]
fn the_schedule_is_named_from_the_stack_and_failures_land_in_the_queue() {
    let t = transformed(&[]);
    let schedule = &resource(&t, "DispatchFunctionTick")["Properties"];
    assert_eq!(
        schedule["Name"],
        json!({"Fn::Sub": "${AWS::StackName}-dispatch"})
    );
    assert_eq!(
        schedule["Target"]["DeadLetterConfig"]["Arn"],
        json!({"Fn::GetAtt": ["FailureQueue", "Arn"]})
    );
    assert_eq!(schedule["Target"]["RetryPolicy"]["MaximumRetryAttempts"], 0);
    let config = &resource(&t, "DispatchFunctionEventInvokeConfig")["Properties"];
    assert_eq!(
        config["DestinationConfig"]["OnFailure"]["Destination"],
        json!({"Fn::GetAtt": ["FailureQueue", "Arn"]})
    );
    assert_eq!(config["MaximumRetryAttempts"], 0);
    // SAM grants the sends it needs: the scheduler's role and the function's role.
    for role in ["DispatchFunctionTickRole", "DispatchFunctionRole"] {
        assert!(
            resource(&t, role).to_string().contains("sqs:SendMessage"),
            "{role}"
        );
    }
}

#[test]
fn logs_are_kept_and_errors_alarm() {
    let t = transformed(&[]);
    for (function, group) in [
        ("DispatchFunction", "DispatchLogGroup"),
        ("WebhookFunction", "WebhookLogGroup"),
        ("InstantDispatchFunction", "InstantDispatchLogGroup"),
    ] {
        assert_eq!(
            resource(&t, function)["Properties"]["LoggingConfig"]["LogGroup"],
            json!({"Ref": group})
        );
        assert_eq!(
            resource(&t, group)["Properties"]["RetentionInDays"],
            json!({"Ref": "LogRetentionDays"})
        );
    }
    for alarm in [
        "DispatchErrorsAlarm",
        "WebhookErrorsAlarm",
        "FailedInvocationsAlarm",
    ] {
        assert_eq!(resource(&t, alarm)["Type"], "AWS::CloudWatch::Alarm");
    }
}

#[test]
fn an_existing_secret_can_be_used_instead() {
    let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prefect-nf-AbCdEf";
    let t = transformed(&[&format!("ExistingSecretArn={arn}")]);
    // The transform keeps the condition; CloudFormation picks the branch at deploy time.
    assert_eq!(
        resource(&t, "CredentialsSecret")["Condition"],
        "CreateSecret"
    );
    assert_eq!(
        t["Conditions"]["CreateSecret"],
        json!({"Fn::Equals": [{"Ref": "ExistingSecretArn"}, ""]})
    );
}

/// The webhook function hands instant-dispatch calls to InstantDispatchFunction: it may invoke
/// that one function (unqualified) and no other, knows its name from the environment, and no
/// other function may invoke anything.
#[test]
fn the_webhook_may_invoke_exactly_the_instant_dispatch_function() {
    let t = transformed(&[]);
    let instant_arn = json!({"Fn::GetAtt": ["InstantDispatchFunction", "Arn"]});
    for function in FUNCTIONS {
        let invokes = statements(&t, &format!("{function}Role"), "lambda:");
        if function != "WebhookFunction" {
            assert!(invokes.is_empty(), "{function}: {invokes:?}");
            continue;
        }
        assert_eq!(invokes.len(), 1, "{invokes:?}");
        assert_eq!(invokes[0]["Effect"], "Allow");
        assert_eq!(invokes[0]["Action"], "lambda:InvokeFunction");
        assert_eq!(invokes[0]["Resource"], instant_arn);
    }
    let webhook = &resource(&t, "WebhookFunction")["Properties"]["Environment"]["Variables"];
    assert_eq!(
        webhook["PFNF_INSTANT_FUNCTION"],
        json!({"Ref": "InstantDispatchFunction"})
    );
    // The other functions keep the shared environment without it: the dispatch binary runs
    // what it is sent, and only the webhook hands over.
    for function in ["DispatchFunction", "InstantDispatchFunction"] {
        let vars = &resource(&t, function)["Properties"]["Environment"]["Variables"];
        assert!(vars.get("PFNF_INSTANT_FUNCTION").is_none(), "{function}");
        assert!(vars.get("PFNF_SECRET_ID").is_some(), "{function}");
    }
}

/// Instant events are not retried, expire within a minute, and land in no failure queue: a
/// lost one costs only the wait for the next tick, and the scheduled dispatch's queue and alarm
/// keep meaning what they say. The one schedule fires the scheduled dispatch only, and the
/// instant function has its own concurrency.
#[test]
fn instant_dispatch_events_are_neither_retried_nor_queued_as_failures() {
    let t = transformed(&[]);
    let config = &resource(&t, "InstantDispatchFunctionEventInvokeConfig")["Properties"];
    assert_eq!(
        config["FunctionName"],
        json!({"Ref": "InstantDispatchFunction"})
    );
    assert_eq!(config["MaximumRetryAttempts"], 0);
    assert!(config["MaximumEventAgeInSeconds"].as_u64().unwrap() <= 60);
    assert_eq!(config["DestinationConfig"], json!({}));
    let function = &resource(&t, "InstantDispatchFunction")["Properties"];
    assert_eq!(
        function["ReservedConcurrentExecutions"],
        json!({"Ref": "InstantReservedConcurrency"})
    );
    // Longer than a quick dispatch's budget.
    let timeout = function["Timeout"].as_u64().unwrap();
    assert!(timeout > prefect_nf::instant::BUDGET.as_secs(), "{timeout}");
    let schedules: Vec<&Value> = t["Resources"]
        .as_object()
        .unwrap()
        .values()
        .filter(|r| r["Type"] == "AWS::Scheduler::Schedule")
        .collect();
    assert_eq!(schedules.len(), 1);
    assert_eq!(
        schedules[0]["Properties"]["Target"]["Arn"],
        json!({"Fn::GetAtt": ["DispatchFunction", "Arn"]})
    );
    assert_eq!(
        function["LoggingConfig"]["LogGroup"],
        json!({"Ref": "InstantDispatchLogGroup"})
    );
}
