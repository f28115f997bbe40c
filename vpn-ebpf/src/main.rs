//! vpn's kernel programs. Entry points are thin; the decisions live in small
//! functions in the modules below so they read (and are tested) one at a time.
#![no_std]
#![no_main]

mod maps;
mod process_maps;
mod sock_addr;
mod sock_create;
// Uplink guard and forwarded-source classifier.
mod guard_maps;
mod owner;
mod packet;
mod tc_guard;
mod tc_ingress;
mod xdp_filter;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here; this is never run.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
