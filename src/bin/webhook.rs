//! The webhook Lambda, behind a Function URL; see `prefect_nf::webhook`.

use lambda_http::{Request, service_fn};
use prefect_nf::lambda::{self, App};

#[tokio::main]
async fn main() -> Result<(), lambda::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let app = App::from_env()
        .await
        .inspect_err(|e| tracing::error!(error = %e, "could not start"))?;
    lambda_http::run(service_fn(|request: Request| {
        lambda::webhook(&app, request)
    }))
    .await
}
