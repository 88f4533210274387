//! berth's networking: host interfaces (DHCP, static) and container networks, configured
//! over netlink. The spine only reserves the crate; the networking issue fills it in.
