//! The key path of a place in TOML text, for config errors: `container[1].healthcheck.interval`
//! for a byte offset inside that value.
//!
//! The TOML parser reports a fault as a byte span, and serde's errors carry no path. A
//! path-tracking deserializer (serde_path_to_error) would instantiate every `Deserialize`
//! impl of the config a second time (it cost PID 1 about 350 KiB of resident memory) for an
//! error path that runs at most once per boot. This scanner reads the text up to the
//! offset instead: table headers (`[kernel]`, the n-th `[[container]]`), the key of each
//! `key = value` line, and inside a value the position in arrays (`[2]`) and inline tables
//! (`.key`). It only runs on text the TOML parser has already read, and it never fails:
//! text it does not follow yields a shorter path.

/// Where the scan is inside a value: an array at element `index`, or an inline table
/// whose current key is `key` (`None` while that key is being read).
enum Frame {
    Array { index: usize },
    Table { key: Option<String> },
}

/// The key path of a fault the TOML deserializer reported at `span` with `message`.
///
/// The deserializer places a fault in an array element at the whole array. Every element
/// check of the config quotes the element (`module name "../evil" is not valid`), so when
/// the span is an array and the message quotes one of its string elements, the path ends
/// at that element: `kernel.modules[1]`, not `kernel.modules`.
///
/// A fault in a table as a whole (a missing field) is placed at its header, `[[container]]`:
/// the path is that table's, `container[1]`.
pub fn fault_path(text: &str, span: std::ops::Range<usize>, message: &str) -> String {
    let bytes = text.as_bytes();
    let (path, on_header) = scan(text, span.start);
    if on_header {
        // The table the header opens: the path just past the header line.
        return key_path_at(text, line_end(text, span.start));
    }
    let mut at = span.start;
    if bytes.get(span.start) == Some(&b'[') {
        let mut i = span.start + 1;
        while i < span.end.min(bytes.len()) {
            match bytes.get(i) {
                Some(b'"' | b'\'') => {
                    let after = skip_string(bytes, i);
                    if text.get(i..after).is_some_and(|s| message.contains(s)) {
                        at = i;
                        break;
                    }
                    i = after;
                }
                _ => i += 1,
            }
        }
    }
    if at == span.start {
        path
    } else {
        key_path_at(text, at)
    }
}

/// The dotted key path (`kernel.modules[1]`) of the value or key at byte `offset` of
/// `text`; empty for a place outside any table or key.
pub fn key_path_at(text: &str, offset: usize) -> String {
    scan(text, offset).0
}

/// The line (1-based) of the header that opens `table`, named as key paths name it:
/// `container[1]`, `network.interface[0]`. Headers are read as [`scan`] reads them
/// (spaces, quoted names and a trailing comment included), in one pass over the text.
pub fn header_line(text: &str, table: &str) -> Option<usize> {
    let mut found = None;
    scan_headers(text, text.len(), &mut |at, name| {
        if found.is_none() && name == table {
            found = Some(at);
        }
    });
    found.map(|at| line_of(text, at))
}

/// The line (1-based) of byte `offset`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(1, |before| before.matches('\n').count() + 1)
}

/// The offset of the end of the line holding `offset` (its `\n`, or the text's end).
fn line_end(text: &str, offset: usize) -> usize {
    text.get(offset..)
        .and_then(|rest| rest.find('\n'))
        .map_or(text.len(), |n| offset + n)
}

/// [`key_path_at`], and whether `offset` is at the `[` of a table header.
fn scan(text: &str, offset: usize) -> (String, bool) {
    scan_headers(text, offset, &mut |_, _| {})
}

/// [`scan`], calling `on_table(offset, table)` for each table header passed on the way.
fn scan_headers(
    text: &str,
    offset: usize,
    on_table: &mut dyn FnMut(usize, &str),
) -> (String, bool) {
    let bytes = text.as_bytes();
    let end = offset.min(bytes.len());
    // The table the current line belongs to, e.g. `container[1]`.
    let mut table = String::new();
    // How many `[[name]]` headers have been seen, per name.
    let mut array_tables: Vec<(String, usize)> = Vec::new();
    // The key of the `key = value` pair being read, once its `=` is passed.
    let mut key: Option<String> = None;
    let mut frames: Vec<Frame> = Vec::new();
    // Where the key being read (at a line start, or in an inline table) begins.
    let mut key_from = 0;
    let mut i = 0;
    while i < end {
        let Some(&b) = bytes.get(i) else { break };
        let in_value = key.is_some();
        let reading_key = !in_value || matches!(frames.last(), Some(Frame::Table { key: None }));
        match b {
            b'\n' if frames.is_empty() => {
                key = None;
                key_from = i + 1;
            }
            b'#' => {
                // A comment runs to the end of the line.
                while i < end && bytes.get(i) != Some(&b'\n') {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' => {
                i = skip_string(bytes, i);
                continue;
            }
            b'[' if !in_value && blank(text, key_from, i) => {
                // A table header: `[name]` or `[[name]]`, to the end of the line.
                let header_end = line_end(text, i);
                let header = text.get(i..header_end).unwrap_or("");
                let header = header.split('#').next().unwrap_or("").trim();
                table = if let Some(name) =
                    header.strip_prefix("[[").and_then(|h| h.strip_suffix("]]"))
                {
                    let name = normalize_key(name);
                    let count = match array_tables.iter_mut().find(|(n, _)| *n == name) {
                        Some((_, count)) => {
                            *count += 1;
                            *count
                        }
                        None => {
                            array_tables.push((name.clone(), 1));
                            1
                        }
                    };
                    format!("{name}[{}]", count - 1)
                } else {
                    normalize_key(
                        header
                            .strip_prefix('[')
                            .and_then(|h| h.strip_suffix(']'))
                            .unwrap_or(""),
                    )
                };
                on_table(i, &table);
                key_from = header_end;
                i = header_end;
                continue;
            }
            b'=' if reading_key => {
                let name = normalize_key(text.get(key_from..i).unwrap_or(""));
                match frames.last_mut() {
                    Some(Frame::Table { key }) => *key = Some(name),
                    _ => key = Some(name),
                }
            }
            _ if reading_key => {}
            b'[' => frames.push(Frame::Array { index: 0 }),
            b'{' => {
                frames.push(Frame::Table { key: None });
                key_from = i + 1;
            }
            b']' | b'}' => {
                frames.pop();
            }
            b',' => match frames.last_mut() {
                Some(Frame::Array { index }) => *index += 1,
                Some(Frame::Table { key }) => {
                    *key = None;
                    key_from = i + 1;
                }
                None => {}
            },
            _ => {}
        }
        i += 1;
    }
    let on_header =
        i == end && key.is_none() && bytes.get(i) == Some(&b'[') && blank(text, key_from, i);
    // The offset is on a key (an unknown one, say): that key, read up to its `=`.
    let key_at_offset = || {
        let rest = text.get(i.min(text.len())..)?;
        let eq = rest.find(['=', '\n', ','])?;
        rest.get(eq..)?.starts_with('=').then_some(())?;
        Some(normalize_key(text.get(key_from..i + eq)?)).filter(|k| !k.is_empty())
    };
    let mut path = table;
    let push_key = |path: &mut String, name: &str| {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(name);
    };
    match &key {
        None => {
            if let Some(name) = key_at_offset() {
                push_key(&mut path, &name);
            }
        }
        Some(name) => {
            push_key(&mut path, name);
            for frame in &frames {
                match frame {
                    Frame::Array { index } => path.push_str(&format!("[{index}]")),
                    Frame::Table { key: Some(name) } => push_key(&mut path, name),
                    Frame::Table { key: None } => {
                        if let Some(name) = key_at_offset() {
                            push_key(&mut path, &name);
                        }
                    }
                }
            }
        }
    }
    (path, on_header)
}

/// Whether only blanks stand between `from` and `to`: a header or key may start at `to`.
fn blank(text: &str, from: usize, to: usize) -> bool {
    text.get(from..to).is_some_and(|s| s.trim().is_empty())
}

/// `a . "b"` → `a.b`: a dotted key without its spaces and quotes.
fn normalize_key(raw: &str) -> String {
    raw.split('.')
        .map(|part| part.trim().trim_matches('"').trim_matches('\''))
        .collect::<Vec<_>>()
        .join(".")
}

/// The offset just past the string that starts at `start` (a `"`, `'`, `"""` or `'''`).
fn skip_string(bytes: &[u8], start: usize) -> usize {
    let Some(&quote) = bytes.get(start) else {
        return start + 1;
    };
    let triple = bytes.get(start..start + 3) == Some(&[quote, quote, quote][..]);
    let mut i = start + if triple { 3 } else { 1 };
    while let Some(&b) = bytes.get(i) {
        if b == b'\\' && quote == b'"' {
            i += 2;
            continue;
        }
        if b == quote {
            if !triple {
                return i + 1;
            }
            if bytes.get(i..i + 3) == Some(&[quote, quote, quote][..]) {
                return i + 3;
            }
        }
        if b == b'\n' && !triple {
            return i;
        }
        i += 1;
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::{header_line, key_path_at};

    /// The path at the first occurrence of `needle` in `text`.
    fn at(text: &str, needle: &str) -> String {
        key_path_at(text, text.find(needle).expect("needle in text"))
    }

    #[test]
    fn top_level_and_table_keys() {
        let text = "version = 1\nhostname = \"bad_name\"\n\n[kernel]\nmodules = \"dummy\"\n";
        assert_eq!(at(text, "\"bad_name\""), "hostname");
        assert_eq!(at(text, "\"dummy\""), "kernel.modules");
        // On a key itself (an unknown field): that key.
        assert_eq!(at(text, "modules"), "kernel.modules");
        assert_eq!(at(text, "hostname"), "hostname");
        assert_eq!(at(text, "[kernel]"), "");
    }

    #[test]
    fn array_tables_are_counted() {
        let text = "version = 1\n[[container]]\nname = \"a\"\n[[image]]\nname = \"i\"\n\
                    [[container]]\nname = \"b\"\nmemory = \"lots\"\n";
        assert_eq!(at(text, "\"lots\""), "container[1].memory");
        assert_eq!(at(text, "\"i\""), "image[0].name");
        assert_eq!(at(text, "\"a\""), "container[0].name");
    }

    #[test]
    fn arrays_and_inline_tables() {
        let text = "[kernel]\nmodules = [\"ok\", \"a,b\", # a comment, with a comma\n  \"../evil\"]\n\
                    [[container]]\nhealthcheck = { command = [\"true\", \"x\"], interval = \"5\" }\n";
        assert_eq!(at(text, "\"../evil\""), "kernel.modules[2]");
        assert_eq!(at(text, "\"x\""), "container[0].healthcheck.command[1]");
        assert_eq!(at(text, "\"5\""), "container[0].healthcheck.interval");
        assert_eq!(at(text, "{"), "container[0].healthcheck");
        assert_eq!(at(text, "interval"), "container[0].healthcheck.interval");
    }

    #[test]
    fn header_lines_of_tables() {
        let text = "version = 1\n[[container]]\nname = \"a\"\n  [[ container ]] # b\n\
                    name = \"b\"\nx = [\n[1]]\n[[network.interface]]\n";
        assert_eq!(header_line(text, "container[0]"), Some(2));
        assert_eq!(header_line(text, "container[1]"), Some(4));
        assert_eq!(header_line(text, "network.interface[0]"), Some(8));
        assert_eq!(header_line(text, "container[2]"), None);
    }

    #[test]
    fn dotted_and_quoted_keys_and_headers() {
        let text = "[ network . \"interface\" ]\n\"odd key\" = 1\nshutdown.timeout = \"3 s\"\n";
        assert_eq!(at(text, "1"), "network.interface.odd key");
        assert_eq!(at(text, "\"3 s\""), "network.interface.shutdown.timeout");
        let text = "[[network.interface]]\nname = \"eth0\"\n[[network.interface]] # two\nmtu = 0\n";
        assert_eq!(at(text, "0\n"), "network.interface[1].mtu");
    }

    #[test]
    fn strings_hide_what_looks_like_syntax() {
        let text = "a = \"[x] = {\"\nb = '''\n[c]\n= '''\nd = \"\\\"#,\"\ne = 5\n";
        assert_eq!(at(text, "5"), "e");
        assert_eq!(at(text, "'''\n[c]"), "b");
    }

    #[test]
    fn a_fault_at_an_array_names_the_element_the_message_quotes() {
        use super::fault_path;
        let text = "[kernel]\nmodules = [\"ok\", 'x', \"../evil\"]\n";
        let array = text
            .find('[')
            .map(|_| text.rfind("= [").unwrap() + 2)
            .unwrap();
        let span = array..text.len() - 1;
        let quoted = "module name \"../evil\" is not valid";
        assert_eq!(fault_path(text, span.clone(), quoted), "kernel.modules[2]");
        assert_eq!(
            fault_path(text, span.clone(), "invalid type"),
            "kernel.modules"
        );
        let value = text.find("\"ok").unwrap();
        assert_eq!(
            fault_path(text, value..value + 4, quoted),
            "kernel.modules[0]"
        );
    }

    #[test]
    fn every_offset_and_span_of_odd_text_is_answered() {
        let text =
            "a = [\"é\", { b = 'ü', c = [1, [2]] }]\n[[x . \"ÿ\"]]\nd = \"\"\"\nq\"\"\"\n# ü\n[";
        for start in 0..=text.len() + 1 {
            let _ = key_path_at(text, start);
            for end in start..=text.len() + 1 {
                let _ = super::fault_path(text, start..end, "\"é\" 'ü'");
            }
        }
        assert_eq!(at(text, "2"), "a[1].c[1][0]");
    }

    #[test]
    fn a_fault_at_a_table_header_names_that_table() {
        use super::fault_path;
        let text = "[kernel]\nmodules = []\n[[container]]\nname = \"a\"\n  [[container]] # b\nname = \"b\"\n";
        let second = text.rfind("[[container]]").unwrap();
        assert_eq!(
            fault_path(text, second..text.len(), "missing field `image`"),
            "container[1]"
        );
        let first = text.find("[[container]]").unwrap();
        assert_eq!(
            fault_path(text, first..second, "missing field `image`"),
            "container[0]"
        );
        assert_eq!(fault_path(text, 0..first, "missing field"), "kernel");
    }

    #[test]
    fn offsets_past_the_end_or_in_garbage_do_not_fail() {
        assert_eq!(key_path_at("a = [1, 2", 100), "a[1]");
        assert_eq!(key_path_at("", 5), "");
        assert_eq!(key_path_at("[[[", 3), "");
        assert_eq!(key_path_at("é = \"ü\"", 4), "é");
    }
}
