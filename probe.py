import subprocess, sys, time, os, signal, json
sys.path.insert(0, "/tmp/h14")
from socks import sockets_of, procs
def descendants(root):
    import pathlib
    ch = {}
    for e in pathlib.Path("/proc").iterdir():
        if e.name.isdigit():
            try: pp = int((e/"stat").read_text().rsplit(")",1)[1].split()[1])
            except Exception: continue
            ch.setdefault(pp, []).append(int(e.name))
    out, todo = [], [root]
    while todo:
        for c in ch.get(todo.pop(), []): out.append(c); todo.append(c)
    return out
kw = sys.argv[1]
p = subprocess.Popen([sys.executable, "/tmp/h14/drv2.py", kw], stdout=subprocess.PIPE, text=True)
print(p.stdout.readline().strip())
time.sleep(3)
tree = [p.pid] + descendants(p.pid)
pr = procs()
print("procs:", sorted(pr.get(t, "?")[:40] for t in tree))
print("LISTEN", sorted({(ip) for _, ip, port in sockets_of(tree)}), len(sockets_of(tree)))
for s in sockets_of(tree): print("  ", pr.get(s[0], "?")[:40], s[1], s[2])
os.kill(p.pid, signal.SIGKILL); p.wait()
time.sleep(8)
left = [t for t in tree if os.path.exists(f"/proc/{t}")]
print("LEFT:", [(t, procs().get(t, "?")[:40]) for t in left])
for t in left: os.kill(t, signal.SIGKILL)
