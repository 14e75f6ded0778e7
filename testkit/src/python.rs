//! Python programs tests run in their namespaces: the common part of a TCP server.

/// A Python TCP server that listens on `sys.argv[1]:sys.argv[2]` (backlog `backlog`), prints
/// `ready` once it listens (see [`crate::process::Background::serve`]), and runs
/// `per_connection` for each accepted connection in turn: Python with `c` the connection,
/// `socket`, `sys` and `time` imported, indented by the caller as if at the top level.
pub fn tcp_server(backlog: u32, per_connection: &str) -> String {
    let mut script = format!(
        "import socket, sys, time\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind((sys.argv[1], int(sys.argv[2])))\n\
         s.listen({backlog})\n\
         print(\"ready\", flush=True)\n\
         while True:\n    \
         c, _ = s.accept()\n"
    );
    for line in per_connection.trim_matches('\n').lines() {
        script.push_str("    ");
        script.push_str(line);
        script.push('\n');
    }
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_runs_per_connection() {
        let s = tcp_server(16, "\nc.recv(8)\nc.close()\n");
        assert!(s.contains("s.listen(16)\n"), "{s}");
        assert!(
            s.ends_with("    c, _ = s.accept()\n    c.recv(8)\n    c.close()\n"),
            "{s}"
        );
    }
}
