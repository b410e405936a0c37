def test_smoke(client, users):
    u = users.create()
    r = client.get("/api/auth/me", headers=u.headers)
    assert r.status_code == 200, r.text
    r = client.post("/api/me/tasks", headers=u.headers, json={"title": "x"})
    assert r.status_code == 201
