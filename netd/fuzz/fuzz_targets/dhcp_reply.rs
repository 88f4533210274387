//! The DHCP decode path: whatever a server sends, `parse_reply` never panics, and a
//! lease it accepts is one the client can apply safely.
#![no_main]

use berth_netd::dhcp::{parse_reply, Reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The fuzzer controls the transaction id and MAC too: take them from the front.
    let (Some(head), Some(body)) = (data.get(..10), data.get(10..)) else { return };
    let xid = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let mac = [head[4], head[5], head[6], head[7], head[8], head[9]];
    if let Ok(Reply::Offer(lease) | Reply::Ack(lease)) = parse_reply(body, xid, &mac) {
        assert!((1..=30).contains(&lease.address.prefix));
        assert!(lease.dns.len() <= 3);
        assert!(lease.routes.len() <= 32);
        assert!(!lease.renew.is_zero() && lease.renew <= lease.rebind && lease.rebind <= lease.lease_time);
        assert_ne!(lease.address.addr, lease.address.broadcast());
    }
});
