//! Operating the server: what an operator scrapes and watches.

mod metrics;
mod startup;
