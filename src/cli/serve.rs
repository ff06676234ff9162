//! `pexen serve`: the library's server ([`crate::serve`]) with the command line's settings. The
//! URL (with the token in its fragment) is the first line on stdout.

use std::io::Write;

use super::args::ServeArgs;
use super::CliError;
use crate::error::exit_code;
use crate::serve::{ServeConfig, Server};

pub(super) fn serve(args: ServeArgs) -> Result<i32, CliError> {
    let config = ServeConfig {
        dir: args.dir,
        listen: args.listen,
        token_file: args.token_file,
        tls: args.tls_cert.zip(args.tls_key),
        state: args.state,
        jobs: args.jobs.map(|j| j as usize),
        grace: args.grace,
    };
    let dir = config.dir.clone();
    let server = Server::bind(config)?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", server.url());
        let _ = out.flush();
    }
    eprintln!(
        "serving {}: open the URL above (it holds the access token); Ctrl-C stops",
        dir.display()
    );
    server.run()?;
    Ok(exit_code::OK)
}
