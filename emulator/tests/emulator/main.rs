//! Integration tests of the emulator, in one binary to keep link time down. Every test talks
//! to 127.0.0.1 only.

mod binary;
mod common;
mod engine;
mod fidelity;
mod gateway;
mod integrations;
mod jobs;
mod knobs;
mod process;
mod runs;
mod validation;
mod webhook_faults;
mod webhooks;
