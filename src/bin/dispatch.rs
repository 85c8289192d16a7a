//! The dispatch Lambda: the EventBridge schedule fires it, and so does the webhook function's
//! hand-off of instant-dispatch calls; see `prefect_nf::lambda::dispatch`.

use lambda_runtime::{LambdaEvent, service_fn};
use prefect_nf::lambda::{self, App};

#[tokio::main]
async fn main() -> Result<(), lambda::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let app = App::from_env()
        .await
        .inspect_err(|e| tracing::error!(error = %e, "could not start"))?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<_>| {
        lambda::dispatch(&app, event)
    }))
    .await
}
