"""Run with .venv-bench's Python (prefect-northflank installed), PREFECT_API_URL pointing at the
bench's Prefect server: saves the Northflank credentials block the Python worker's runs use
(its base_url pointing at the emulator) and prints, as one JSON line, the block document id and
the worker's own default base job template, so the pool is exactly what
`prefect work-pool create --type northflank` would make, without any registry look-up.

    python theirs_setup.py --block bench-theirs --token T --base-url http://127.0.0.1:P
"""

import argparse
import json

from prefect_northflank import Northflank, NorthflankWorker


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--block", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--base-url", required=True)
    args = parser.parse_args()
    block = Northflank(api_token=args.token, base_url=args.base_url)
    # save() registers the block type and schema too, as `prefect block register` would.
    block_id = block.save(args.block, overwrite=True)
    template = NorthflankWorker.get_default_base_job_template()
    print(json.dumps({"block_document_id": str(block_id), "template": template}))


if __name__ == "__main__":
    main()
