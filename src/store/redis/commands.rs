//! An announce's commands, written once for either way they travel: as
//! RESP straight into the buffer of our own connection to a master
//! ([`super::wire`]), or into the client's `Pipeline` for its connections
//! (the cluster client, a single server, a master over TLS).

use redis::{Cmd, Pipeline};

/// Where an announce's commands are written: straight into a [`super::wire::Wire`]'s
/// buffer as RESP, or into the client's pipeline for its connections.
pub(super) trait Commands {
    /// Starts a command of `args` arguments, its name included.
    fn command(&mut self, args: usize);
    /// One argument of the command started last.
    fn arg(&mut self, arg: &[u8]);

    /// A number argument, in decimal.
    fn arg_number(&mut self, n: u64) {
        self.arg(itoa::Buffer::new().format(n).as_bytes());
    }
}

/// Commands written as RESP (arrays of bulk strings) onto `bytes`.
pub(super) struct Packed<'a> {
    pub bytes: &'a mut Vec<u8>,
    /// Commands written so far.
    pub count: usize,
}

impl Commands for Packed<'_> {
    fn command(&mut self, args: usize) {
        self.count += 1;
        self.bytes.push(b'*');
        self.bytes
            .extend_from_slice(itoa::Buffer::new().format(args).as_bytes());
        self.bytes.extend_from_slice(b"\r\n");
    }

    fn arg(&mut self, arg: &[u8]) {
        self.bytes.push(b'$');
        self.bytes
            .extend_from_slice(itoa::Buffer::new().format(arg.len()).as_bytes());
        self.bytes.extend_from_slice(b"\r\n");
        self.bytes.extend_from_slice(arg);
        self.bytes.extend_from_slice(b"\r\n");
    }
}

/// The client's pipeline, written through [`Commands`].
pub(super) struct Piped {
    pipe: Pipeline,
    current: Option<Cmd>,
}

impl Piped {
    /// The pipeline of the commands `build` writes.
    pub fn build(build: &mut (dyn FnMut(&mut dyn Commands) + Send)) -> Pipeline {
        let mut piped = Piped {
            pipe: Pipeline::with_capacity(6),
            current: None,
        };
        build(&mut piped);
        if let Some(cmd) = piped.current.take() {
            piped.pipe.add_command(cmd);
        }
        piped.pipe
    }
}

impl Commands for Piped {
    fn command(&mut self, args: usize) {
        if let Some(cmd) = self.current.take() {
            self.pipe.add_command(cmd);
        }
        self.current = Some(Cmd::with_capacity(args, 128));
    }

    fn arg(&mut self, arg: &[u8]) {
        if let Some(cmd) = &mut self.current {
            cmd.arg(arg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_written_as_the_client_writes_them() {
        let mut bytes = b"left as it was".to_vec();
        let mut packed = Packed {
            bytes: &mut bytes,
            count: 0,
        };
        packed.command(3);
        packed.arg(b"EVALSHA");
        packed.arg(b"");
        packed.arg(&[0, 13, 10, 255]);
        packed.command(4);
        packed.arg(b"GETRANGE");
        packed.arg(b"k{1}");
        packed.arg_number(0);
        packed.arg_number(u64::MAX);
        assert_eq!(packed.count, 2);
        let mut pipe = redis::pipe();
        pipe.cmd("EVALSHA").arg(b"").arg(&[0u8, 13, 10, 255][..]);
        pipe.cmd("GETRANGE").arg("k{1}").arg(0).arg(u64::MAX);
        let expected = [&b"left as it was"[..], &pipe.get_packed_pipeline()].concat();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn the_client_s_pipeline_gets_the_same_commands() {
        let pipe = Piped::build(&mut |out: &mut dyn Commands| {
            out.command(2);
            out.arg(b"GET");
            out.arg(b"k");
            out.command(3);
            out.arg(b"GETRANGE");
            out.arg_number(7);
            out.arg(b"");
        });
        let mut expected = redis::pipe();
        expected.cmd("GET").arg("k");
        expected.cmd("GETRANGE").arg(7).arg("");
        assert_eq!(pipe.len(), 2);
        assert_eq!(pipe.get_packed_pipeline(), expected.get_packed_pipeline());
    }
}
