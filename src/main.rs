//! The mecfed binary (commands arrive with `mecfed up`).
fn main() {}
