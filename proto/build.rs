//! Compiles agent.proto with protox (pure Rust), so building needs no `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["agent.proto"], ["."])?;
    // Default stubs (Unimplemented) let a test's fake agent serve only the
    // calls it is about; vminitd implements every one.
    tonic_prost_build::configure()
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=agent.proto");
    Ok(())
}
