# Regenerate golden.json: python3 golden.py > golden.json
# Independent model of ipvsadm 1.31's printf formats, to produce golden strings.
def largenum(i, exact):
    if exact:
        l = len(str(i)); w = 9 if l <= 8 else l + 1
        return "%*d" % (w, i)
    if i < 100000000: return "%9d" % i
    if i < 1000000000: return "%8dK" % (i // 1000)
    if i < 100000000000: return "%8dM" % (i // 1000000)
    if i < 100000000000000: return "%8dG" % (i // 1000000000)
    return "%8dT" % (i // 1000000000000)

S = lambda **k: {**dict(conns=0,inpkts=0,outpkts=0,inbytes=0,outbytes=0,cps=0,inpps=0,outpps=0,inbps=0,outbps=0), **k}
svcs = [
 dict(name="TCP  10.0.0.1:80", rule="-t 10.0.0.1:80", sched="sh", flagsname="sh-fallback,sh-port", pers=None, ops=False,
      stats=S(conns=123456789, inpkts=99999999, outpkts=1000000000, inbytes=5000000000, outbytes=123456789012345, cps=7, inpps=8, outpps=9, inbps=100000000, outbps=12),
      dests=[("10.0.1.1:80","Route","-g",0,0,0,0,0,0,S()),("10.0.1.2:8080","Masq","-m",1,0,0,3,12,0,S(conns=5,inbps=250000000))]),
 dict(name="UDP  10.0.0.2:53", rule="-u 10.0.0.2:53", sched="rr", flagsname=None, pers=(600,"255.255.255.0"), ops=True, stats=S(),
      dests=[("10.0.2.1:53","Masq","-m",2,100,50,1,2,3,S())]),
 dict(name="TCP  [2001:db8::1]:443", rule="-t [2001:db8::1]:443", sched="lc", flagsname=None, pers=None, ops=False, stats=S(),
      dests=[("[2001:db8::10]:443","Masq","-m",1,0,0,0,0,0,S())]),
 dict(name="FWM  7 IPv6", rule="-f 7 -6", sched="wrr", flagsname=None, pers=(300,"64"), ops=False, stats=S(),
      dests=[("[2001:db8::2]:0","Tunnel","-i",5,0,0,0,0,0,S())]),
]
def listing(fmt):
    out = ""
    if fmt != "rule": out += "IP Virtual Server version 1.2.1 (size=4096)\n"
    P="Prot LocalAddress:Port"
    if fmt=="stats" or fmt=="exact": out += "%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n" % (P,"Conns","InPkts","OutPkts","InBytes","OutBytes")
    elif fmt=="rate": out += "%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n" % (P,"CPS","InPPS","OutPPS","InBPS","OutBPS")
    elif fmt=="thr": out += "%-33s %-10s %-10s %-10s %-10s\n  -> RemoteAddress:Port\n" % (P,"Uthreshold","Lthreshold","ActiveConn","InActConn")
    elif fmt=="pc": out += "%-33s %-9s %-11s %-10s %-10s\n  -> RemoteAddress:Port\n" % (P,"Weight","PersistConn","ActiveConn","InActConn")
    elif fmt!="rule": out += "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
    for s in svcs:
        ex = fmt=="exact"
        if fmt=="rule":
            out += "-A %s -s %s" % (s["rule"], s["sched"])
            if s["pers"]: out += " -p %d -M %s" % s["pers"]
            if s["ops"]: out += " -o"
            if s["flagsname"]: out += " -b " + s["flagsname"]
        elif fmt in ("stats","exact"):
            st=s["stats"]; out += "%-33s" % s["name"] + "".join(largenum(st[k],ex) for k in ("conns","inpkts","outpkts","inbytes","outbytes"))
        elif fmt=="rate":
            st=s["stats"]; out += "%-33s" % s["name"] + "".join(largenum(st[k],False) for k in ("cps","inpps","outpps","inbps","outbps"))
        else:
            out += "%s %s" % (s["name"], s["sched"])
            if s["flagsname"]: out += " (%s)" % s["flagsname"]
            if s["pers"]: out += " persistent %d mask %s" % s["pers"]
            if s["ops"]: out += " ops"
        out += "\n"
        for (d,fw,sw,w,u,l,a,i,p,st) in s["dests"]:
            if fmt=="rule":
                out += "-a %s -r %s %s -w %d" % (s["rule"], d, sw, w)
                if fw=="Tunnel": out += " --tun-type ipip"
                out += "\n"
            elif fmt in ("stats","exact"):
                out += "  -> %-28s" % d + "".join(largenum(st[k],ex) for k in ("conns","inpkts","outpkts","inbytes","outbytes")) + "\n"
            elif fmt=="rate":
                out += "  -> %-28s %8d %8d %8d" % (d, st["cps"], st["inpps"], st["outpps"]) + largenum(st["inbps"],False) + largenum(st["outbps"],False) + "\n"
            elif fmt=="thr":
                out += "  -> %-28s %-10u %-10u %-10u %-10u\n" % (d,u,l,a,i)
            elif fmt=="pc":
                out += "  -> %-28s %-9u %-11u %-10u %-10u\n" % (d,w,p,a,i)
            else:
                out += "  -> %-28s %-7s %-6d %-10u %-10u\n" % (d,fw,w,a,i)
    return out
import json
print(json.dumps({f: listing(f) for f in ("plain","stats","exact","rate","thr","pc","rule")}, indent=1))
