"""docker-py against berth's API (run by api/tests/clients.rs, with DOCKER_HOST set and
a stand-in PID 1 holding `web` (running), `job` (exited 3) and `fresh` (created)).
Prints one line per check; any failure raises."""
import docker

client = docker.from_env(version="auto")
assert client.ping() is True
version = client.version()
assert version["ApiVersion"] == "1.47", version
print("version", version["ApiVersion"], version["Os"])

names = sorted(c.name for c in client.containers.list(all=True))
assert names == ["fresh", "job", "web"], names
running = [c.name for c in client.containers.list()]
assert running == ["web"], running
by_label = [c.name for c in client.containers.list(all=True, filters={"label": "org.berth.origin=api"})]
assert sorted(by_label) == ["fresh", "job"], by_label
print("list", " ".join(names))

web = client.containers.get("web")
assert web.status == "running", web.status
assert web.attrs["State"]["Running"] is True
assert web.attrs["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"] == "8080"
assert web.logs() == b"first\n", web.logs()
print("get", web.name, web.short_id)

web.stop(timeout=1)
web.reload()
assert web.status == "exited", web.status
web.start()
web.reload()
assert web.status == "running", web.status
print("stop start", web.status)

try:
    client.containers.get("nope")
    raise SystemExit("a missing container was found")
except docker.errors.NotFound as e:
    assert "No such container: nope" in str(e), e
print("not found")

info = client.info()
assert info["NCPU"] == 7 and info["ContainersRunning"] == 1, info
print("info", info["Name"])
