fn main() {
    std::process::exit(container::cli::main());
}
