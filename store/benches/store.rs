//! Store benchmark (filled in with the benchmark).
fn main() {}
