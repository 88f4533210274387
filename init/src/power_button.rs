//! The ACPI power button. With the `button` driver loaded the button is an input device;
//! with `evdev` it gets a `/dev/input/eventN` node that PID 1 reads for `KEY_POWER`.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// `KEY_POWER` from linux/input-event-codes.h.
pub const KEY_POWER: usize = 116;
const EV_KEY: u16 = 1;
/// `struct input_event` on 64-bit: a 16-byte timeval, u16 type, u16 code, i32 value.
const EVENT_SIZE: usize = 24;

/// Whether a sysfs capability bitmap (`capabilities/key`: hex words, most significant
/// first, each the width of a C long) has `bit` set.
pub fn bitmap_has(bitmap: &str, bit: usize) -> bool {
    let words: Vec<&str> = bitmap.split_whitespace().collect();
    let index_from_end = bit / 64;
    let Some(word) = words
        .len()
        .checked_sub(1 + index_from_end)
        .and_then(|i| words.get(i))
    else {
        return false;
    };
    u64::from_str_radix(word, 16).is_ok_and(|w| w & (1 << (bit % 64)) != 0)
}

/// Whether a buffer of input events holds a press of the power key.
pub fn power_pressed(events: &[u8]) -> bool {
    events.chunks_exact(EVENT_SIZE).any(|e| {
        let kind = u16::from_ne_bytes([e[16], e[17]]);
        let code = u16::from_ne_bytes([e[18], e[19]]);
        let value = i32::from_ne_bytes([e[20], e[21], e[22], e[23]]);
        kind == EV_KEY && usize::from(code) == KEY_POWER && value == 1
    })
}

/// Opens every event device under `class_input` (`/sys/class/input`) that can send
/// `KEY_POWER`, via its node in `dev_input` (`/dev/input`).
pub fn open_power_buttons(class_input: &Path, dev_input: &Path) -> Vec<File> {
    let Ok(entries) = std::fs::read_dir(class_input) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("event"))
        .collect();
    names.sort();
    names
        .into_iter()
        .filter(|name| {
            let caps = class_input.join(name).join("device/capabilities/key");
            std::fs::read_to_string(caps).is_ok_and(|b| bitmap_has(&b, KEY_POWER))
        })
        .filter_map(|name| {
            let node = dev_input.join(&name);
            match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(&node)
            {
                Ok(f) => Some(f),
                Err(e) => {
                    log::warn!("cannot open power button {}: {e}", node.display());
                    None
                }
            }
        })
        .collect()
}

/// Reads what is pending on a button's event device; true if the power key was pressed.
pub fn read_press(device: &mut File) -> bool {
    let mut buf = [0u8; EVENT_SIZE * 16];
    let mut pressed = false;
    while let Ok(n) = device.read(&mut buf) {
        if n == 0 {
            break;
        }
        pressed |= buf.get(..n).is_some_and(power_pressed);
    }
    pressed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_bits() {
        // What the kernel shows for the ACPI "Power Button" device.
        assert!(bitmap_has("10000000000000 0\n", KEY_POWER));
        assert!(!bitmap_has("0\n", KEY_POWER));
        assert!(!bitmap_has("", KEY_POWER));
        assert!(bitmap_has("1", 0));
        assert!(!bitmap_has("zz 0", KEY_POWER));
    }

    fn event(kind: u16, code: u16, value: i32) -> Vec<u8> {
        let mut e = vec![0u8; 16];
        e.extend_from_slice(&kind.to_ne_bytes());
        e.extend_from_slice(&code.to_ne_bytes());
        e.extend_from_slice(&value.to_ne_bytes());
        e
    }

    #[test]
    fn press_detection() {
        let press = event(EV_KEY, KEY_POWER as u16, 1);
        let release = event(EV_KEY, KEY_POWER as u16, 0);
        let sync = event(0, 0, 0);
        assert!(power_pressed(&[sync.clone(), press].concat()));
        assert!(!power_pressed(&[release, sync].concat()));
        assert!(!power_pressed(&event(EV_KEY, 115, 1)));
        assert!(!power_pressed(&[1, 2, 3]));
    }
}
