//! Integration tests: the real binary and the library against a fresh SQLite file and a fresh
//! PostgreSQL database per test, providers on wiremock over loopback.

mod helpers;

mod bad_inputs;
mod cli;
mod delivery;
mod fallback;
mod faults;
mod forecast;
mod guarantees;
mod import;
mod manual;
mod operations;
mod operator;
mod pass;
mod providers;
mod rates;
mod scheduled;
mod smtp;
