//! Operating the server: what an operator scrapes and watches.

mod deploy;
mod metrics;
mod startup;
