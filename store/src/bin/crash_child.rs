//! Child process for the embedded store's crash test (filled in with the crash test).
fn main() {}
