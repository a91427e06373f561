async def test_livez(client):
    response = await client.get("/livez")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
