"""The benchmark suite: pushwire beside nats-server and mosquitto, same run, same machine.

    wsclient.py   WebSocket client framing, sans-I/O (handshake, masked frames out, frames in)
    adapters.py   one client session per protocol over it: pushwire, NATS text, MQTT 3.1.1
    loadgen.py    a load-generator process holding thousands of those sessions
    peers.py      nats-server and mosquitto started for the run, loopback only
    cluster.py    a pushwire cluster started for the run
    scenarios.py  idle, fanout, unicast, storm
    report.py     one JSON line per server, a readable table, ratios

`pushwire bench SCENARIO [--peers] [--quick]` (cli/benchcmd.py) runs them; figures and how
they were taken are in bench/RESULTS.md.
"""
