//! Writing `/etc/resolv.conf`.

use std::fs::File;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::Path;

/// The text of a resolv.conf: the search domains, then at most three nameservers (the
/// resolver's limit), without duplicates.
pub fn render(nameservers: &[Ipv4Addr], search: &[String]) -> String {
    let mut text = String::from("# written by berth\n");
    let search: Vec<&str> = search
        .iter()
        .map(String::as_str)
        .filter(|d| is_domain(d))
        .collect();
    if !search.is_empty() {
        text.push_str(&format!("search {}\n", search.join(" ")));
    }
    let mut seen = Vec::new();
    for ns in nameservers {
        if !seen.contains(ns) && seen.len() < 3 {
            seen.push(*ns);
            text.push_str(&format!("nameserver {ns}\n"));
        }
    }
    text
}

/// A domain safe to write into resolv.conf: DHCP servers are not trusted to send one.
fn is_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

/// Replaces `path` atomically with `text`.
pub fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    let tmp = path.with_extension("berth-tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_limits_and_filters() {
        let ns: Vec<Ipv4Addr> = ["10.0.2.3", "10.0.2.3", "1.1.1.1", "8.8.8.8", "9.9.9.9"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let text = render(&ns, &["lan".into(), "evil\nnameserver 6.6.6.6".into()]);
        assert_eq!(
            text,
            "# written by berth\nsearch lan\nnameserver 10.0.2.3\nnameserver 1.1.1.1\nnameserver 8.8.8.8\n"
        );
    }
}
