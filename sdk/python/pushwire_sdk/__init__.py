"""pushwire's Python client: one persistent connection to a room, kept alive for you.

    from pushwire_sdk import PushClient

    async with PushClient("https://dispatcher.example:8000", "demo", "alice", token) as client:
        async for message in client.messages():
            handle(message)

Errors are pushwire_protocol.errors classes (ClientClosed adds the close code and reason).
"""

from pushwire_sdk.client import ClientClosed, PushClient
from pushwire_sdk.protocol import Kind, Message, UpReply

__all__ = ["ClientClosed", "Kind", "Message", "PushClient", "UpReply"]
