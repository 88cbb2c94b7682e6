# Ping a collective through fedgate's WebSocket edge: python3 ws_ping.py URL TOKEN CA [COLLECTIVE]
import asyncio, json, ssl, sys
from websockets.asyncio.client import connect

async def main(url, token, ca, collective="london"):
    tls = ssl.create_default_context(cafile=ca) if url.startswith("wss:") else None
    async with connect(url, ssl=tls, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        await ws.recv()  # welcome
        await ws.send(json.dumps({"type": "rpc", "id": "py1", "collective": collective, "agent": "rpcutil", "action": "ping"}))
        async for frame in ws:
            print(frame)
            if json.loads(frame)["type"] in ("done", "error"):
                break

asyncio.run(main(*sys.argv[1:]))
