fn main() {
    // `--cfg afq_tsfn`: wake JS through a threadsafe function on Unix too (src/node/wake.rs).
    println!("cargo::rustc-check-cfg=cfg(afq_tsfn)");
    napi_build::setup();
}
