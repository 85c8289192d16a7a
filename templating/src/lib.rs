//! Prefect 3.9 work-pool job-template rendering, reproducing the Python worker byte for byte so existing
//! `prefect.yaml` job variables keep working.
//!
//! The order a worker applies it in, as `BaseJobConfiguration.resolve_for_flow_run` does:
//!
//! 1. [`merge_job_variables`]: deployment job variables, then the flow run's (env merged key by key).
//! 2. [`render_job_configuration`]: pool defaults, dotted keys, env merges, then [`apply_values`].
//! 3. [`resolve_references`]: block documents, then Prefect variables, through the caller's [`Lookup`].
//! 4. The caller's model: [`coerce_env`] for `env`, its own types for the other fields, then
//!    `prepare_for_flow_run` (base environment, labels, name, command).
//!
//! Python formatting is part of the contract: embedded values are rendered with Python's `str()`
//! ([`py_str`]), e.g. `x-{{ flag }}` with `true` gives `x-True`.

mod apply;
mod error;
mod job_config;
mod merge;
mod path;
mod placeholder;
mod pychar;
mod pyrepr;
mod pytype;
mod resolve;

pub use apply::apply_values;
pub use error::{LookupError, TemplateError};
pub use job_config::{coerce_env, render_job_configuration};
pub use merge::merge_job_variables;
pub use path::get_from_dict;
pub use placeholder::{Placeholder, PlaceholderKind, find_placeholders, find_placeholders_in};
pub use pyrepr::{py_repr, py_str};
pub use resolve::{Lookup, resolve_references};
