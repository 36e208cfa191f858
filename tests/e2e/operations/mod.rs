//! Operating the server: what an operator scrapes and watches.

mod dashboard;
mod deploy;
mod drain;
mod metrics;
mod startup;
mod usage;
