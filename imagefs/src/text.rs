//! Text that came from an image, made safe to print.
//!
//! Names, media types, ref names and the tar reader's own messages (which quote
//! header bytes) all come from bytes someone else wrote. Printed raw, a crafted
//! name could move the cursor, clear the screen or retitle the terminal, and a
//! garbage header fills it with binary noise. Everything from an image that reaches
//! an error message goes through [`printable`] or [`printable_bytes`]: control
//! characters and bidirectional overrides are escaped, invalid UTF-8 shows as
//! `\xNN`, and the result is bounded.

/// The usual bound for one value quoted in a message (a path, a media type).
pub const MAX_SHOWN: usize = 200;

/// Characters that reorder the text around them ("Trojan Source", CVE-2021-42574):
/// a name holding them can print as another name.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Appends `c` escaped if it could disturb a terminal.
fn push_char(out: &mut String, c: char) {
    if c.is_control() || is_bidi_control(c) {
        out.extend(c.escape_default());
    } else {
        out.push(c);
    }
}

/// Appends the marker for what was left out.
fn push_cut(out: &mut String, left_bytes: usize) {
    out.push_str(&format!("… ({left_bytes} more bytes)"));
}

/// `s` with control characters escaped, cut after about `max_chars` characters.
pub fn printable(s: &str, max_chars: usize) -> String {
    printable_bytes(s.as_bytes(), max_chars)
}

/// Bytes as text: valid UTF-8 as itself (control characters escaped), other bytes
/// as `\xNN`; cut after about `max_chars` characters with a note of how many bytes
/// were left out.
pub fn printable_bytes(bytes: &[u8], max_chars: usize) -> String {
    if bytes.len() <= max_chars && bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
        // The common case: a plain ASCII name.
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let mut out = String::new();
    let mut shown = 0;
    let mut consumed = 0;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if shown >= max_chars {
                push_cut(&mut out, bytes.len() - consumed);
                return out;
            }
            push_char(&mut out, c);
            shown += 1;
            consumed += c.len_utf8();
        }
        for b in chunk.invalid() {
            if shown >= max_chars {
                push_cut(&mut out, bytes.len() - consumed);
                return out;
            }
            out.push_str(&format!("\\x{b:02x}"));
            shown += 1;
            consumed += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass_unchanged() {
        assert_eq!(printable("usr/bin/env", MAX_SHOWN), "usr/bin/env");
        assert_eq!(printable("café/naïve", MAX_SHOWN), "café/naïve");
    }

    #[test]
    fn terminal_controls_and_bad_utf8_are_escaped() {
        let shown = printable_bytes(b"a\x1b[2Jb\n\xff\xfe\x07", MAX_SHOWN);
        assert_eq!(shown, "a\\u{1b}[2Jb\\n\\xff\\xfe\\u{7}");
        assert!(shown.chars().all(|c| !c.is_control()), "{shown}");
        assert_eq!(printable("x\u{202e}y", MAX_SHOWN), "x\\u{202e}y");
    }

    #[test]
    fn long_text_is_cut_and_says_how_much() {
        let shown = printable(&"x".repeat(1000), 10);
        assert_eq!(shown, "xxxxxxxxxx… (990 more bytes)");
        let shown = printable_bytes(&[0xff; 50], 4);
        assert_eq!(shown, "\\xff\\xff\\xff\\xff… (46 more bytes)");
    }
}
