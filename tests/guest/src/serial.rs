//! Polled output (and, for `testguest.echo`, input) on the 8250 UART at 0x3f8 (COM1),
//! without core::fmt.
//!
//! One port write (one VM exit) per byte. The line status register is not polled:
//! an emulated UART always takes the byte, and every poll would be another exit.

use crate::io::{inb, outb};

const COM1: u16 = 0x3f8;
/// The line status register; bit 0: data ready.
const COM1_LSR: u16 = COM1 + 5;

/// The prefix of every line the guest prints.
pub const PREFIX: &[u8] = b"testguest: ";

pub fn byte(b: u8) {
    outb(COM1, b);
}

pub fn bytes(s: &[u8]) {
    for &b in s {
        byte(b);
    }
}

/// Prints bytes from the guest's environment (command line, vendor strings) so they
/// cannot break the line structure: control characters and bytes above 0x7e become
/// '?', NULs are dropped.
pub fn text(s: &[u8]) {
    for &b in s {
        match b {
            0 => {}
            0x20..=0x7e => byte(b),
            _ => byte(b'?'),
        }
    }
}

/// `n` in decimal. No digit buffer: a zeroed array of 16+ bytes is where rustc would
/// reach for SSE stores.
pub fn dec(n: u64) {
    let mut p: u64 = 1;
    while n / p >= 10 {
        p *= 10;
    }
    loop {
        byte(b'0' + (n / p % 10) as u8);
        if p == 1 {
            break;
        }
        p /= 10;
    }
}

/// `n` as exactly `digits` lowercase hex digits.
pub fn hex(n: u64, digits: u32) {
    let mut shift = digits * 4;
    while shift > 0 {
        shift -= 4;
        let d = ((n >> shift) & 0xf) as u8;
        byte(if d < 10 { b'0' + d } else { b'a' + d - 10 });
    }
}

/// `n` in lowercase hex without leading zeros (at least one digit).
pub fn hex_min(n: u64) {
    hex_at_least(n, 1);
}

/// `n` in lowercase hex, at least `min` digits (zero-padded), more when it needs them.
pub fn hex_at_least(n: u64, min: u32) {
    let mut digits = min.max(1);
    while digits < 16 && n >> (digits * 4) != 0 {
        digits += 1;
    }
    hex(n, digits);
}

/// A received byte, if one is waiting (LSR bit 0; 0xff means no UART).
pub fn read() -> Option<u8> {
    let lsr = inb(COM1_LSR);
    if lsr != 0xff && lsr & 1 != 0 {
        Some(inb(COM1))
    } else {
        None
    }
}

/// Echoes one received byte as part of an `echo=<line>` line; `in_line` says whether
/// that line is already started. Returns the new `in_line`.
pub fn echo(b: u8, in_line: bool) -> bool {
    if b == b'\n' || b == b'\r' {
        if in_line {
            end();
        }
        return false;
    }
    if !in_line {
        begin();
        bytes(b"echo=");
    }
    text(&[b]);
    true
}

/// Starts a line: `testguest: `.
pub fn begin() {
    bytes(PREFIX);
}

pub fn end() {
    byte(b'\n');
}

/// A whole line: `testguest: <s>`.
pub fn line(s: &[u8]) {
    begin();
    bytes(s);
    end();
}
