//! Stub
fn main(){}
