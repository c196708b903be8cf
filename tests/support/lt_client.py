"""A libtorrent peer for shoal's real-client tests (run with /usr/bin/python3).

usage: lt_client.py seed|leech TORRENT SAVE_DIR SECONDS [LISTEN]

LISTEN is libtorrent's listen_interfaces (default 127.0.0.1:0; [::1]:0 for a
peer on IPv6 loopback).

Peer discovery is limited to the tracker: no DHT, LSD, PEX (default plugins
off), UPnP or NAT-PMP. Every peer is on loopback, so several connections per
IP are allowed and SSRF mitigation is off. `leech` exits 0 once the download
is complete and verified (it then announces `completed` and `stopped`);
`seed` seeds until SECONDS pass or SIGINT/SIGTERM, then announces `stopped`.
"""
import signal
import sys
import time

import libtorrent as lt

mode, torrent, save_dir, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
listen = sys.argv[5] if len(sys.argv) > 5 else "127.0.0.1:0"
settings = {
    "listen_interfaces": listen,
    "enable_dht": False,
    "enable_lsd": False,
    "enable_upnp": False,
    "enable_natpmp": False,
    "allow_multiple_connections_per_ip": True,
    "ssrf_mitigation": False,
    "announce_to_all_trackers": True,
    "alert_mask": lt.alert.category_t.status_notification | lt.alert.category_t.error_notification,
}
ses = lt.session(settings, 0)  # flags 0: no default plugins, so no ut_pex
params = {"ti": lt.torrent_info(torrent), "save_path": save_dir}
h = ses.add_torrent(params)
stop = False


def on_signal(*_):
    global stop
    stop = True


signal.signal(signal.SIGINT, on_signal)
signal.signal(signal.SIGTERM, on_signal)
deadline = time.time() + seconds
done = False
while not stop and time.time() < deadline:
    s = h.status()
    if mode == "leech" and s.is_seeding:
        done = True
        time.sleep(1.0)  # let the `completed` announce go out
        break
    time.sleep(0.1)
ses.remove_torrent(h)  # sends event=stopped
time.sleep(1.0)
sys.exit(0 if (mode == "seed" or done) else 1)
