"""A multi-turn chat as one Autellix program: every turn is a call of the same program, so the engines
schedule it by the service the whole conversation has received (PLAS), not turn by turn.

    autellix serve                 # in another terminal (default SmolLM2 model, port 8000)
    python examples/chat_loop.py [--base-url http://127.0.0.1:8000/v1] [--turns 3]
"""

from __future__ import annotations

import argparse

from openai import OpenAI

from autellix.client import Program

QUESTIONS = ["What is the capital of France?", "What river flows through it?",
             "Name one famous museum there.", "What is it known for?"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--api-key", default="none")
    parser.add_argument("--turns", type=int, default=3)
    args = parser.parse_args()
    client = OpenAI(base_url=args.base_url, api_key=args.api_key)
    model = client.models.list().data[0].id
    messages: list[dict[str, str]] = [{"role": "system", "content": "You are a concise assistant."}]
    with Program(client) as program:
        print(f"program {program.id}")
        for question in QUESTIONS[:args.turns]:
            messages.append({"role": "user", "content": question})
            reply = program.chat.completions.create(model=model, messages=messages, max_tokens=48)
            answer = reply.choices[0].message.content or ""
            messages.append({"role": "assistant", "content": answer})
            print(f"> {question}\n{answer.strip()}\n")
        info = program.status()
        print(f"program service so far: {info['service']:.1f} decode-token equivalents "
              f"over {info['completed_calls']} calls")


if __name__ == "__main__":
    main()
