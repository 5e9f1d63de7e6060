"""A parallel tree search (LATS-like) as one Autellix program: each level expands several branches in
parallel, one thread per branch, then keeps the best. Parallel calls share the program's priority
(ATLAS: the program's service is its longest critical path, not the sum of its branches).

    autellix serve --engines 2
    python examples/tree_search.py [--base-url http://127.0.0.1:8000/v1] [--width 3] [--depth 2]
"""

from __future__ import annotations

import argparse
import asyncio

from openai import AsyncOpenAI

from autellix.client import Program, Thread


async def expand(thread: Thread, model: str, path: str) -> tuple[float, str]:
    """One branch: continue the partial answer; score it by the model's mean token log-probability."""
    r = await thread.completions.create(model=model, prompt=path, max_tokens=16, temperature=1.0,
                                        logprobs=1)
    choice = r.choices[0]
    lps = choice.logprobs.token_logprobs if choice.logprobs else None
    score = sum(lps) / len(lps) if lps else 0.0
    return score, path + choice.text


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--api-key", default="none")
    parser.add_argument("--width", type=int, default=3)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--prompt", default="Q: Why is the sky blue?\nA:")
    args = parser.parse_args()
    client = AsyncOpenAI(base_url=args.base_url, api_key=args.api_key)
    model = (await client.models.list()).data[0].id
    best = args.prompt
    async with Program(client) as program:
        for level in range(args.depth):
            branches = [program.thread(f"L{level}-b{i}") for i in range(args.width)]
            results = await asyncio.gather(*(expand(t, model, best) for t in branches))
            score, best = max(results)
            print(f"level {level}: {len(results)} branches, best score {score:.3f}")
        info = await program.astatus()
        print(f"\n{best}\n\nprogram {program.id}: {info['completed_calls']} calls on "
              f"{len(info['threads'])} threads, service {info['service']:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
