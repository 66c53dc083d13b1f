#!/usr/bin/env python3
"""Creates N pods (of one batch Job) and M events in a test cluster started by
`scripts/just cluster`, for memory measurements of `kubesink run`.

Usage: load-cluster.py CLUSTER_DIR PORT PODS EVENTS (CLUSTER_DIR holds ca.crt and
the kubesink-admin certificate; PORT is the API server port it printed)."""
import json, ssl, sys, http.client, concurrent.futures, time
d, port = sys.argv[1], int(sys.argv[2]); npods, nevents = int(sys.argv[3]), int(sys.argv[4])
ctx = ssl.create_default_context(cafile=f"{d}/ca.crt"); ctx.load_cert_chain(f"{d}/kubesink-admin.crt", f"{d}/kubesink-admin.key")
def post(path, body):
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
    c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"}); r = c.getresponse(); data = r.read(); c.close()
    return r.status, data
st, job = post("/apis/batch/v1/namespaces/default/jobs", {"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"load"},"spec":{"template":{"spec":{"restartPolicy":"Never","containers":[{"name":"c","image":"busybox"}]}}}})
uid = json.loads(job)["metadata"]["uid"]
def pod(i):
    return post("/api/v1/namespaces/default/pods", {"metadata":{"name":f"load-{i}","labels":{"job-name":"load"},"ownerReferences":[{"apiVersion":"batch/v1","kind":"Job","name":"load","uid":uid,"controller":True}]},"spec":{"containers":[{"name":"c","image":"busybox","resources":{"requests":{"cpu":"100m","memory":"64Mi"}}}]}})[0]
def ev(i):
    return post("/api/v1/namespaces/default/events", {"metadata":{"name":f"load-{i}.{i}"},"involvedObject":{"kind":"Pod","namespace":"default","name":f"load-{i%max(npods,1)}"},"reason":"Pulled","message":f"Container image pulled {i}","type":"Normal","count":1,"firstTimestamp":"2026-01-01T00:00:00Z","lastTimestamp":"2026-01-01T00:00:00Z","source":{"component":"kubelet","host":"n1"}})[0]
t=time.time()
with concurrent.futures.ThreadPoolExecutor(16) as ex:
    codes = list(ex.map(pod, range(npods))) + list(ex.map(ev, range(nevents)))
print("created", sum(1 for c in codes if c == 201), "of", len(codes), "in", round(time.time()-t,1), "s")
