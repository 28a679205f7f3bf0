#!/usr/bin/env bash
# Regenerates the real captures committed under Tests/ConnCaptureTests/Captures (plus its README.md and
# expected.json) by recording nmap scans and benign connections with tcpdump in the victim namespace of the lab.
# Needs root, nmap, tcpdump, nft and python3. Usage: Tests/e2e/record-captures.sh [OUTPUT-DIR]
# Not part of `make test`: the captures are committed; run this only to change them, then review the README diff.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_require_root
lab_require_cmds nmap tcpdump nft tc python3 gcc "${CLANG_BPF:-clang-14}"

out=${1:-$E2E_CAPTURES}
mkdir -p "$out"
out=$(cd "$out" && pwd)
max_bytes=51200

lab_up
lab_listen victim 22 80 443
descriptions=$LAB_TMP/descriptions
: >"$descriptions"
declare -A capture_pid

# Starts tcpdump in the victim writing $LAB_TMP/NAME. Immediate mode with a small snap length: in immediate mode
# libpcap uses TPACKET_V2, whose slots are sized by the snap length, so the default 262144 leaves only 8 slots in
# a 2 MiB buffer and an nmap burst overflows it.
capture_start() { # NAME TCPDUMP-ARGS...
    local name=$1
    shift
    lab_spawn victim "tcpdump-$name" tcpdump -n --immediate-mode -s 2048 -B 8192 -U -w "$LAB_TMP/$name" "$@"
    capture_pid[$name]=$LAB_LAST_PID
    wait_for_line "$LAB_TMP/tcpdump-$name.err" 'listening on' 10 ||
        fail "tcpdump for $name did not start: $(cat "$LAB_TMP/tcpdump-$name.err")"
}

capture_stop() { # NAME
    local name=$1 err=$LAB_TMP/tcpdump-$1.err size
    sleep 0.5 # late answers (RSTs) still in flight
    lab_stop "${capture_pid[$name]}" INT 10
    grep -q '^0 packets dropped by kernel' "$err" || fail "tcpdump for $name lost packets: $(cat "$err")"
    size=$(stat -c %s "$LAB_TMP/$name")
    ((size <= max_bytes)) || fail "$name is $size bytes, over the $max_bytes budget"
    cp "$LAB_TMP/$name" "$out/$name"
    log "recorded $name: $(grep 'packets captured' "$err"), $size bytes"
}

describe() { printf '%s\t%s\n' "$1" "$2" >>"$descriptions"; }

nmap_scan() { # [-6] TARGET PORTS
    local six=()
    if [[ $1 == -6 ]]; then six=(-6); shift; fi
    lab_exec attacker 60 nmap "${six[@]}" -n -Pn -sS --max-retries 1 -T4 -p "$2" "$1" >>"$LAB_TMP/nmap.log" 2>&1 ||
        fail "nmap $* failed: $(tail -n 5 "$LAB_TMP/nmap.log")"
}

# 1, 2: an nmap SYN scan of 30 ports plus 3 benign connections, per family.
for family in 4 6; do
    name=nmap-syn-scan-v$family.pcap
    if [[ $family == 4 ]]; then victim=$LAB_VICTIM_IP4 six=(); else victim=$LAB_VICTIM_IP6 six=(-6); fi
    capture_start "$name" -i "$LAB_IF_VICTIM"
    lab_connect client "$victim" 22
    nmap_scan "${six[@]}" "$victim" 20-49
    lab_connect client "$victim" 80 443
    capture_stop "$name"
    describe "$name" "Ethernet on the victim's interface. The client connects to port 22; the attacker runs \
\`nmap ${six[*]}${six:+ }-sS -p 20-49\` against the victim (22 open, the rest closed); then the client connects to 80 and 443. \
Expect one port scan (attacker -> victim) and none for the client's 3 ports."
done

# 3: benign traffic only, with SYN retransmissions: the victim drops SYNs to 8081, so the client's kernel resends
# its SYN (after 1 s and 3 s) until connect.py gives up at 3.5 s.
name=benign-v4.pcap
lab_exec victim 10 nft -f - <<'NFT'
table inet lab_drop {
    chain input {
        type filter hook input priority 0; policy accept;
        tcp dport 8081 drop
    }
}
NFT
capture_start "$name" -i "$LAB_IF_VICTIM"
lab_connect client "$LAB_VICTIM_IP4" 22 80
lab_connect client --timeout 3.5 --expect-timeout "$LAB_VICTIM_IP4" 8081
lab_connect attacker --count 2 "$LAB_VICTIM_IP4" 443
capture_stop "$name"
lab_exec victim 10 nft delete table inet lab_drop
describe "$name" "Ethernet on the victim's interface, no scan. The client connects to 22 and 80, then to 8081, \
where an nftables rule in the victim drops the SYN, so the client's kernel retransmits it (same 4-tuple) until \
the client gives up after 3.5 s; the attacker host, behaving, connects twice to 443. The client reaches exactly \
3 distinct ports: at the threshold, not over it, so no port scan."

# 4, 5, 6: the same traffic recorded at once by three tcpdumps: "-i any -y LINUX_SLL" (cooked v1), "-i any -y
# LINUX_SLL2" (v2, the default for "any" since libpcap 1.10), and the victim's interface with nanosecond
# timestamps; the last is also converted to pcapng.
capture_start any-linux-sll.pcap -i any -y LINUX_SLL
capture_start any-linux-sll2.pcap -i any -y LINUX_SLL2
capture_start mixed-nano.pcap -i "$LAB_IF_VICTIM" --time-stamp-precision nano
lab_connect client "$LAB_VICTIM_IP4" 80
nmap_scan "$LAB_VICTIM_IP4" 20-29
nmap_scan -6 "$LAB_VICTIM_IP6" 20-29
lab_connect client "$LAB_VICTIM_IP6" 443
for name in any-linux-sll.pcap any-linux-sll2.pcap mixed-nano.pcap; do capture_stop "$name"; done
python3 "$E2E_TOOLS/pcap2pcapng.py" "$out/mixed-nano.pcap" "$out/mixed-nano.pcapng" "$LAB_IF_VICTIM" >&2
# The conversion must be lossless: tcpdump prints the same records, with nanosecond times, from both files.
diff <(tcpdump -nn -tt --time-stamp-precision nano -r "$out/mixed-nano.pcap" 2>/dev/null) \
    <(tcpdump -nn -tt --time-stamp-precision nano -r "$out/mixed-nano.pcapng" 2>/dev/null) >/dev/null ||
    fail "mixed-nano.pcapng does not read back like mixed-nano.pcap"
mixed="Traffic: the client connects to 80 over IPv4; the attacker runs \`nmap -sS -p 20-29\` against the victim over IPv4, \
then \`nmap -6 -sS -p 20-29\` over IPv6; the client connects to 443 over IPv6. Expect two port scans (one per family) \
and none for the client."
describe any-linux-sll.pcap "\`tcpdump -i any -y LINUX_SLL\` in the victim namespace: Linux cooked capture v1 \
(16-byte header), what libpcap before 1.10 gives on \`-i any\`. $mixed"
describe any-linux-sll2.pcap "\`tcpdump -i any -y LINUX_SLL2\`, at the same time as the previous file (same \
packets; a separate socket, so timestamps differ by microseconds): Linux cooked capture v2 (20-byte header), what \
\`tcpdump -i any\` gives by default with libpcap 1.10.3 here. $mixed"
describe mixed-nano.pcap "\`tcpdump --time-stamp-precision nano\` on the victim's interface at the same time as the \
two previous files: Ethernet, nanosecond pcap (magic a1b23c4d). $mixed"
describe mixed-nano.pcapng "\`mixed-nano.pcap\` converted to pcapng by \`Tests/e2e/tools/pcap2pcapng.py\` (one \
section, one interface with if_tsresol 9, enhanced packet blocks): the same records and timestamps, checked with \
tcpdump when recorded (tcpdump 4.99 does not write pcapng; editcap would need most of Wireshark)."

# 7, 8: VLAN-tagged frames, 802.1Q (VLAN 100) and QinQ (802.1ad VLAN 200 around 802.1Q VLAN 100). This kernel has
# no 8021q module and no bridge VLAN filtering, so tc programs (tools/vlan_tag.bpf.c) tag the frames: the
# attacker's switch port is an access port (tags pushed on ingress, popped on egress) and the victim's link is a
# trunk (the victim pops tags on ingress, after tcpdump has seen them, and tags frames for the attacker on egress,
# before tcpdump sees them). The attacker itself sends and receives untagged frames, so nmap works as usual.
bpf_obj=$LAB_TMP/vlan_tag.bpf.o
"${CLANG_BPF:-clang-14}" -O2 -g -target bpf -I"/usr/include/$(gcc -dumpmachine)" \
    -c "$E2E_TOOLS/vlan_tag.bpf.c" -o "$bpf_obj" || fail "cannot build tools/vlan_tag.bpf.c (set CLANG_BPF)"
tc_attach() { # ROLE IFACE DIRECTION SECTION
    lab_exec "$1" 10 tc qdisc replace dev "$2" clsact
    lab_exec "$1" 10 tc filter replace dev "$2" "$3" pref 1 bpf direct-action obj "$bpf_obj" sec "$4"
}
for kind in 8021q qinq; do
    tc_attach switch "$LAB_PORT_ATTACKER" ingress "tc/push_$kind"
    tc_attach switch "$LAB_PORT_ATTACKER" egress tc/pop
    tc_attach victim "$LAB_IF_VICTIM" ingress tc/pop
    tc_attach victim "$LAB_IF_VICTIM" egress "tc/push_${kind}_to_attacker"
    name=vlan-$kind.pcap
    capture_start "$name" -i "$LAB_IF_VICTIM"
    nmap_scan "$LAB_VICTIM_IP4" 20-29
    nmap_scan -6 "$LAB_VICTIM_IP6" 20-29
    capture_stop "$name"
    lab_exec switch 10 tc qdisc del dev "$LAB_PORT_ATTACKER" clsact
    lab_exec victim 10 tc qdisc del dev "$LAB_IF_VICTIM" clsact
    if [[ $kind == 8021q ]]; then
        tags="one 802.1Q tag (TPID 0x8100, VLAN 100)"
    else
        tags="two tags, 802.1ad outside (TPID 0x88a8, VLAN 200) and 802.1Q inside (VLAN 100)"
    fi
    describe "$name" "Ethernet on the victim's interface, with $tags on every frame between the attacker and the \
victim (ARP and neighbour discovery included); the client's and other hosts' frames are untagged. Tags are pushed \
and popped by tc programs (\`Tests/e2e/tools/vlan_tag.bpf.c\`; this kernel has no 8021q module), as a trunk \
port would. The attacker runs \`nmap -sS -p 20-29\` against the victim over IPv4, then \`nmap -6 -sS -p 20-29\` \
over IPv6. Expect two port scans."
done

python3 "$E2E_TOOLS/capture_summary.py" "$out" "$descriptions"
log "captures, README.md and expected.json written to $out"
