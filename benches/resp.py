"""The least of a Redis client, for the bench scripts' Python: a command
encoded in RESP, and one reply read back (an error raised)."""


def encode(*args):
    """One command: its arguments as bytes (others as their text)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def read_reply(f):
    """One reply from the buffered socket file `f`: bytes, a list, None."""
    line = f.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2]
    if kind == b"*":
        return [read_reply(f) for _ in range(int(rest))]
    if kind == b"-":
        raise RuntimeError(rest.decode())
    return rest
