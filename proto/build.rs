//! Compiles agent.proto with protox (pure Rust), so building needs no `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["agent.proto"], ["."])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    println!("cargo:rerun-if-changed=agent.proto");
    Ok(())
}
