//! Lines for people on stderr that can never panic: `eprintln!` panics when
//! stderr is closed (`nat-pmp-agent ... 2>&1 | head -1`); a filter's agent
//! must keep running (and keep its exit path) whatever its terminal does.

use std::io::Write as _;

/// Writes `args` and a newline to stderr, ignoring a closed or full stderr.
pub fn say_line(args: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args);
    let _ = err.write_all(b"\n");
}

/// `eprintln!` that never panics (see the module docs).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::live::console::say_line(format_args!($($arg)*))
    };
}
