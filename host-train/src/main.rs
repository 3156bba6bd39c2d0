fn main() {
    println!("host-train: not yet implemented");
}
