"""The example flow the demo deploys and the end-to-end test runs through Northflank (or the
emulator's process mode): a flow with a parameter, a task and a log line."""

from prefect import flow, get_run_logger, task


@task
def greet(name: str) -> str:
    return f"Hello, {name}!"


@flow(name="hello-northflank", log_prints=True)
def hello(name: str = "Northflank") -> str:
    message = greet(name)
    get_run_logger().info("greeting ready")
    print(message)
    return message


if __name__ == "__main__":
    hello()
