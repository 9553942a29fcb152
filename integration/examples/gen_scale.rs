//! Writes a generated benchmark input (see `htnn_integration::scale`) into a directory:
//! `cargo run -p htnn-integration --example gen_scale -- DIR N_VIRTUAL_SERVICES`.
fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse().ok())) else {
        eprintln!("usage: gen_scale DIR N_VIRTUAL_SERVICES");
        std::process::exit(2);
    };
    let shape = htnn_integration::scale::Shape {
        virtual_services: n,
        htnn: true,
        extras: false,
    };
    htnn_integration::scale::write_all(std::path::Path::new(dir), shape)
}
