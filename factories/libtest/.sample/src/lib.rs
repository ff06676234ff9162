//! A small crate whose unit tests `factories/libtest/unit.gen` turns into one pexen task each.

/// Adds two numbers.
pub fn add(a: u64, b: u64) -> u64 {
    a + b
}

/// Parses a port number.
pub fn port(s: &str) -> Result<u16, std::num::ParseIntError> {
    s.trim().parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds() {
        assert_eq!(add(2, 2), 4);
    }

    #[test]
    fn parses_a_port() {
        assert_eq!(port(" 8080\n"), Ok(8080));
    }

    #[test]
    fn rejects_a_port_out_of_range() {
        assert!(port("65536").is_err());
    }

    #[test]
    fn reads_its_working_directory() {
        // cargo runs tests in the package root; so does the generated task.
        assert!(std::path::Path::new("Cargo.toml").exists());
    }

    #[test]
    #[ignore = "slow: run with --include-ignored"]
    fn slow_soak() {
        assert_eq!((0..1_000_000u64).map(|i| add(i, 1)).max(), Some(1_000_000));
    }

    #[test]
    fn deliberately_fails_when_asked() {
        // Off by default, so that the example tree passes; the tests set it to see a failure.
        if std::env::var_os("SAMPLE_FAIL").is_some() {
            assert_eq!(add(1, 1), 3, "asked to fail");
        }
    }

    mod nested {
        #[test]
        fn a_test_in_a_nested_module() {
            assert_eq!(super::add(0, 0), 0);
        }
    }
}
