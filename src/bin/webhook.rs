//! The webhook Lambda, behind a Function URL; see `prefect_nf::webhook`.

use lambda_http::{Request, service_fn};
use prefect_nf::lambda;

#[tokio::main]
async fn main() -> Result<(), lambda::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let worker = lambda::worker_from_env()?;
    lambda_http::run(service_fn(|request: Request| {
        lambda::webhook(&worker, request)
    }))
    .await
}
