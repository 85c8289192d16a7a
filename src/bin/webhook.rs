//! The webhook Lambda, behind a Function URL: the endpoint's router served by `lambda_http`;
//! see `prefect_nf::endpoint`.

use prefect_nf::lambda::{self, App};

#[tokio::main]
async fn main() -> Result<(), lambda::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let app = App::from_env()
        .await
        .inspect_err(|e| tracing::error!(error = %e, "could not start"))?;
    lambda_http::run(app.router()).await
}
