//! Documentation walk-throughs, run as written. A page in `docs/` marks its
//! walk-through with `<!-- walkthrough -->` … `<!-- /walkthrough -->`; every
//! fenced block with the info string `sh` in between is a step (blocks showing
//! output are fenced `json` or `text` and are not run). [`run`] starts a fresh
//! `natter serve` the way the README does (SQLite and files under
//! `./natter-data` of the directory it runs in, defaults but for the ports),
//! then runs all the steps in order in one `bash -euo pipefail` in that same
//! directory, with `natter` and `natter-cli` first on `PATH` and `HOME` there
//! too (natter-cli keeps its profiles under `~/.natter-cli`).

use anyhow::{Context, bail};
use natter_common::testing::TempDir;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BEGIN: &str = "<!-- walkthrough -->";
const END: &str = "<!-- /walkthrough -->";

/// One `sh` block of a walk-through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// 1-based line of the block's first command.
    pub line: usize,
    /// The commands, as written.
    pub text: String,
}

/// The walk-through's steps of a Markdown page, in order.
pub fn steps(markdown: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    // (info string, first line, lines) of the fence we are in.
    let mut fence: Option<(String, usize, Vec<&str>)> = None;
    let (mut inside, mut seen) = (false, false);
    for (i, line) in markdown.lines().enumerate() {
        let n = i + 1;
        if let Some((info, first, body)) = &mut fence {
            if line.trim_end() == "```" {
                if inside && info == "sh" {
                    steps.push(Step {
                        line: *first,
                        text: body.join("\n"),
                    });
                }
                fence = None;
            } else {
                body.push(line);
            }
            continue;
        }
        if let Some(info) = line.strip_prefix("```") {
            fence = Some((info.trim().to_owned(), n + 1, Vec::new()));
        } else if line.trim() == BEGIN {
            if inside || seen {
                return Err(format!("line {n}: a second {BEGIN}"));
            }
            (inside, seen) = (true, true);
        } else if line.trim() == END {
            if !inside {
                return Err(format!("line {n}: {END} without {BEGIN}"));
            }
            inside = false;
        }
    }
    if fence.is_some() {
        return Err("a fenced block is not closed".into());
    }
    if !seen || inside {
        return Err(format!("no {BEGIN} … {END} pair"));
    }
    if steps.is_empty() {
        return Err("the walk-through has no sh block".into());
    }
    Ok(steps)
}

/// `natter-cli` from the target directory of `natter`, built (or brought up
/// to date: a binary left by an older build would lack today's subcommands)
/// on demand; it belongs to another package, so cargo hands its path only to
/// that package's tests.
pub fn natter_cli(natter: &Path) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--locked",
            "-p",
            "natter-client",
            "--bin",
            "natter-cli",
        ])
        .status()
        .expect("run cargo");
    assert!(status.success(), "building natter-cli failed");
    natter.parent().expect("target dir").join("natter-cli")
}

/// The clone's root, found at run time (see `crate_dir`).
pub fn workspace_dir() -> PathBuf {
    crate::crate_dir()
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// A `natter serve` child, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Whether `GET /readyz` answers 200 (plain HTTP/1.1: no client needed).
fn ready(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let mut head = [0u8; 12];
    s.write_all(req.as_bytes()).is_ok()
        && s.read_exact(&mut head).is_ok()
        && head.ends_with(b" 200")
}

fn start_server(natter: &Path, dir: &Path, port: u16, log: &Path) -> anyhow::Result<Server> {
    let log = std::fs::File::create(log)?;
    let mut child = Command::new(natter)
        .arg("serve")
        .current_dir(dir)
        // Only the ports differ from the README's `natter serve`: tests run
        // side by side, and 8080 or 3478 may be taken.
        .env("NATTER_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("NATTER_TURN__LISTEN", "127.0.0.1:0")
        .env_remove("NATTER_DATA_DIR")
        .env_remove("NATTER_DATABASE__URL")
        .env_remove("NATTER_REDIS__URL")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("start {}", natter.display()))?;
    for _ in 0..600 {
        if ready(port) {
            return Ok(Server(child));
        }
        if let Some(status) = child.try_wait()? {
            bail!("natter serve exited during start-up: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!("natter serve did not become ready on port {port}")
}

/// The script: each step echoed (as a transcript would show it), then run.
fn script(doc: &str, steps: &[Step]) -> String {
    let mut s = String::from("exec 2>&1\ntrap 'echo \"FAILED (exit $?): $BASH_COMMAND\"' ERR\n");
    for step in steps {
        let _ = write!(
            s,
            "printf '\\n## %s:%d\\n' '{doc}' {line}\ncat <<'__NATTER_STEP__'\n{text}\n__NATTER_STEP__\n{text}\n",
            line = step.line,
            text = step.text,
        );
    }
    s.push_str("echo '## walk-through done'\n");
    s
}

/// Runs the walk-through of `docs/<page>` against a fresh server; returns
/// the transcript, or an error holding it and the server's log.
pub fn run(page: &str, natter: &Path, natter_cli: &Path) -> anyhow::Result<String> {
    let path = workspace_dir().join("docs").join(page);
    let markdown =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let steps = steps(&markdown).map_err(|e| anyhow::anyhow!("docs/{page}: {e}"))?;
    let last = &steps.last().expect("steps are not empty").text;
    // A walk-through whose last step checks nothing could pass on a server
    // answering errors to everything.
    if !(last.contains("jq -e") || last.contains("grep ")) {
        bail!("docs/{page}: the walk-through's last step checks nothing (jq -e or grep)");
    }
    let work = TempDir::new("natter-doc");
    let home = work.path().join("home");
    std::fs::create_dir_all(&home)?;
    let bins = natter.parent().context("natter has a directory")?;
    if natter_cli.parent() != Some(bins) {
        bail!("natter-cli is not beside natter");
    }
    let port = free_port()?;
    let server_log = work.path().join("server.log");
    let server = start_server(natter, work.path(), port, &server_log)?;
    let file = work.path().join("walkthrough.sh");
    std::fs::write(&file, script(&format!("docs/{page}"), &steps))?;
    let path_var = std::env::join_paths(std::iter::once(bins.to_owned()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    // Bounded: a step that hangs (waiting for input) fails the run with its
    // transcript rather than holding the test until nextest kills it.
    let out = Command::new("timeout")
        .args(["--kill-after=10", "300", "bash", "-euo", "pipefail"])
        .arg(&file)
        .current_dir(work.path())
        .env("PATH", path_var)
        .env("HOME", &home)
        .env("NATTER_SERVER", format!("http://127.0.0.1:{port}"))
        .env_remove("NATTER_DATA_DIR")
        .env_remove("NATTER_PROFILE")
        .env_remove("NATTER_STATE")
        .env_remove("NATTER_CLI_HOME")
        .stdin(Stdio::null())
        .output()
        .context("run bash (and timeout)")?;
    drop(server);
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || !transcript.ends_with("## walk-through done\n") {
        let log = std::fs::read_to_string(&server_log).unwrap_or_default();
        bail!(
            "docs/{page}: the walk-through failed ({})\n--- transcript ---\n{transcript}\n--- natter serve log ---\n{log}",
            out.status
        );
    }
    Ok(transcript)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sh_blocks_between_the_markers_are_steps() {
        let md = "```sh\nbefore\n```\n<!-- walkthrough -->\nText\n```sh\na=1\necho $a\n```\n```json\n{}\n```\n```text\nout\n```\n```sh\nb\n```\n<!-- /walkthrough -->\n```sh\nafter\n```\n";
        assert_eq!(
            steps(md).unwrap(),
            vec![
                Step {
                    line: 7,
                    text: "a=1\necho $a".into()
                },
                Step {
                    line: 17,
                    text: "b".into()
                },
            ]
        );
    }

    #[test]
    fn pages_without_a_closed_walkthrough_are_refused() {
        assert!(steps("```sh\nx\n```\n").is_err());
        assert!(steps("<!-- walkthrough -->\n```sh\nx\n```\n").is_err());
        assert!(steps("<!-- walkthrough -->\n```text\nx\n```\n<!-- /walkthrough -->\n").is_err());
        assert!(steps("<!-- walkthrough -->\n```sh\nx\n<!-- /walkthrough -->\n").is_err());
    }

    #[test]
    fn a_marker_inside_a_fence_is_text() {
        let md = "<!-- walkthrough -->\n```text\n<!-- /walkthrough -->\n```\n```sh\nx\n```\n<!-- /walkthrough -->\n";
        assert_eq!(steps(md).unwrap().len(), 1);
    }
}
