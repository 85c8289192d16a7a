//! The webhook Lambda, behind a Function URL; see `prefect_nf::webhook`.

use lambda_http::{Request, service_fn};
use prefect_nf::{config, lambda, worker::Worker};

#[tokio::main]
async fn main() -> Result<(), lambda::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let worker = Worker::new(
        config::Settings::from_env()?,
        config::Credentials::from_env()?,
    )?;
    lambda_http::run(service_fn(|request: Request| {
        lambda::webhook(&worker, request)
    }))
    .await
}
