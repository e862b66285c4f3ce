"""Built-in GSM8K-style word problems (``builtin:word_problems``): quantities, units, steps.

Each problem comes from one of a dozen templates (shopping with change, speed and time,
sharing into boxes, metres and centimetres, weekly savings, discounts, ages, legs on a farm,
fuel use, hours and minutes, ...) filled with random names and numbers, chosen so that every
intermediate result is a whole number. Problems take one to three steps. The reference is
the final number as a string (scored by the ``math`` verifier); :attr:`WordProblem.steps`
holds the worked solution in GSM8K's ``<<a*b=c>>`` form, which tests re-evaluate.

    What is generated is deterministic in ``seed``; ``split`` ("all", "train", "test") keeps
    a fixed tenth of the problems (by a hash of the text) for testing only.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from rlvr.data.records import PromptRecord, in_split

NAMES = ("Ava", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas",
         "Kemi", "Liam", "Maya", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sam", "Tariq")  # fmt: skip
ITEMS = (("notebook", "notebooks"), ("pen", "pens"), ("apple", "apples"),
         ("ticket", "tickets"), ("sandwich", "sandwiches"), ("comic", "comics"))  # fmt: skip
MAX_TRIES_PER_PROBLEM = 50  # distinct-problem rejection sampling bound (per requested problem)


@dataclass(frozen=True)
class WordProblem:
    template: str
    text: str
    answer: int
    steps: tuple[str, ...]  # worked solution: "3 notebooks cost <<3*4=12>>12 dollars."

    def solution(self) -> str:
        """GSM8K layout: the worked steps, then ``#### answer``."""
        return "\n".join([*self.steps, f"#### {self.answer}"])

    def to_record(self, id: str) -> PromptRecord:
        return PromptRecord(prompt=self.text, reference=str(self.answer), id=id)


def _calc(expr: str, value: int) -> str:
    """``<<expr=value>>value`` (GSM8K's calculator annotation)."""
    return f"<<{expr}={value}>>{value}"


# -- templates: rng -> WordProblem ------------------------------------------------------------
def _shopping(r: random.Random) -> WordProblem:
    name, (_, many) = r.choice(NAMES), r.choice(ITEMS)
    k, price = r.randint(2, 9), r.randint(2, 15)
    cost = k * price
    bill = r.choice([b for b in (20, 50, 100, 200) if b > cost])
    text = (f"{name} buys {k} {many} at {price} dollars each and pays with a {bill}-dollar "
            f"bill. How much change, in dollars, does {name} get back?")  # fmt: skip
    steps = (f"The {many} cost {_calc(f'{k}*{price}', cost)} dollars.",
             f"The change is {_calc(f'{bill}-{cost}', bill - cost)} dollars.")  # fmt: skip
    return WordProblem("shopping", text, bill - cost, steps)


def _two_legs(r: random.Random) -> WordProblem:
    vehicle = r.choice(("train", "bus", "car", "cyclist"))
    v1, h1, v2, h2 = r.randint(3, 12) * 5, r.randint(1, 4), r.randint(3, 12) * 5, r.randint(1, 3)
    d1, d2 = v1 * h1, v2 * h2
    text = (f"A {vehicle} travels at {v1} km per hour for {h1} hours, then at {v2} km per "
            f"hour for {h2} hours. How many kilometres does it travel in total?")  # fmt: skip
    steps = (f"First part: {_calc(f'{v1}*{h1}', d1)} km.",
             f"Second part: {_calc(f'{v2}*{h2}', d2)} km.",
             f"Total: {_calc(f'{d1}+{d2}', d1 + d2)} km.")  # fmt: skip
    return WordProblem("two_legs", text, d1 + d2, steps)


def _boxes(r: random.Random) -> WordProblem:
    name = r.choice(NAMES)
    box, boxes, trays = r.randint(3, 8), r.randint(3, 12), r.randint(2, 6)
    gift = r.randint(1, 20)
    total = box * boxes + gift
    per_tray, extra = divmod(total, trays)
    if extra:  # make the trays come out even: give away more
        gift += trays - extra
        total, per_tray = box * boxes + gift, (box * boxes + gift) // trays
    text = (f"{name} bakes {trays} trays of {per_tray} cookies. {name} gives {gift} cookies "
            f"to friends and packs the rest into boxes of {box}. How many boxes does "
            f"{name} fill?")  # fmt: skip
    steps = (f"Cookies baked: {_calc(f'{trays}*{per_tray}', total)}.",
             f"Left to pack: {_calc(f'{total}-{gift}', total - gift)}.",
             f"Boxes: {_calc(f'{total - gift}/{box}', boxes)}.")  # fmt: skip
    return WordProblem("boxes", text, boxes, steps)


def _ribbon(r: random.Random) -> WordProblem:
    name, metres = r.choice(NAMES), r.randint(2, 9)
    pieces = r.randint(2, 6)
    piece_cm = r.randint(5, min(40, (metres * 100 - 1) // pieces))
    used = pieces * piece_cm
    text = (f"A ribbon is {metres} metres long. {name} cuts {pieces} pieces of {piece_cm} "
            "centimetres each from it. How many centimetres of ribbon are left?")  # fmt: skip
    steps = (f"The ribbon is {_calc(f'{metres}*100', metres * 100)} cm long.",
             f"The pieces use {_calc(f'{pieces}*{piece_cm}', used)} cm.",
             f"Left: {_calc(f'{metres * 100}-{used}', metres * 100 - used)} cm.")  # fmt: skip
    return WordProblem("ribbon", text, metres * 100 - used, steps)


def _savings(r: random.Random) -> WordProblem:
    name, weekly, weeks = r.choice(NAMES), r.randint(3, 25), r.randint(3, 12)
    saved = weekly * weeks
    spend = r.randint(1, saved - 1)
    thing = r.choice(("a game", "a jacket", "a book", "headphones", "a plant"))
    text = (f"{name} saves {weekly} dollars every week for {weeks} weeks, then spends {spend} "
            f"dollars on {thing}. How many dollars does {name} have left?")  # fmt: skip
    steps = (f"Saved: {_calc(f'{weekly}*{weeks}', saved)} dollars.",
             f"Left: {_calc(f'{saved}-{spend}', saved - spend)} dollars.")  # fmt: skip
    return WordProblem("savings", text, saved - spend, steps)


def _discount(r: random.Random) -> WordProblem:
    thing = r.choice(("jacket", "bicycle", "lamp", "backpack", "tent", "chair", "watch",
                      "guitar", "camera", "kettle"))  # fmt: skip
    pct = r.choice((10, 20, 25, 50))
    price = r.randint(2, 50) * {10: 10, 20: 5, 25: 4, 50: 2}[pct]  # whole-dollar discount
    off = price * pct // 100
    text = (f"A {thing} costs {price} dollars. It is on sale for {pct}% off. What is the sale "
            "price in dollars?")  # fmt: skip
    steps = (f"The discount is {_calc(f'{price}*{pct}/100', off)} dollars.",
             f"The sale price is {_calc(f'{price}-{off}', price - off)} dollars.")  # fmt: skip
    return WordProblem("discount", text, price - off, steps)


def _ages(r: random.Random) -> WordProblem:
    name, age, gap, years = r.choice(NAMES), r.randint(5, 40), r.randint(2, 30), r.randint(2, 15)
    other = age + gap
    total = age + years + other + years
    text = (f"{name} is {age} years old. {name}'s aunt is {gap} years older than {name}. "
            f"What will the sum of their ages be in {years} years?")  # fmt: skip
    steps = (f"The aunt is {_calc(f'{age}+{gap}', other)} years old.",
             f"In {years} years: {_calc(f'{age}+{years}+{other}+{years}', total)}.")  # fmt: skip
    return WordProblem("ages", text, total, steps)


def _farm(r: random.Random) -> WordProblem:
    hens, cows, ducks = r.randint(2, 30), r.randint(1, 15), r.randint(1, 12)
    legs = 2 * hens + 4 * cows + 2 * ducks
    text = (f"A farm has {hens} chickens, {cows} cows and {ducks} ducks. How many legs do the "
            "animals have in total?")  # fmt: skip
    steps = (f"Chicken legs: {_calc(f'{hens}*2', 2 * hens)}.",
             f"Cow legs: {_calc(f'{cows}*4', 4 * cows)}.",
             f"Duck legs: {_calc(f'{ducks}*2', 2 * ducks)}.",
             f"Total: {_calc(f'{2 * hens}+{4 * cows}+{2 * ducks}', legs)}.")  # fmt: skip
    return WordProblem("farm", text, legs, steps)


def _fuel(r: random.Random) -> WordProblem:
    per100, hundreds = r.randint(4, 12), r.randint(1, 15)
    km, price = hundreds * 100, r.randint(1, 4)
    litres = per100 * hundreds
    vehicle = r.choice(("car", "van", "truck", "camper"))
    text = (f"A {vehicle} uses {per100} litres of fuel per 100 km. Fuel costs {price} dollars per "
            f"litre. How many dollars does the fuel for a {km} km trip cost?")  # fmt: skip
    steps = (f"Litres: {_calc(f'{km}/100*{per100}', litres)}.",
             f"Cost: {_calc(f'{litres}*{price}', litres * price)} dollars.")  # fmt: skip
    return WordProblem("fuel", text, litres * price, steps)


def _minutes(r: random.Random) -> WordProblem:
    name, hours, minutes = r.choice(NAMES), r.randint(1, 4), r.randint(1, 11) * 5
    sessions = r.randint(2, 5)
    each = hours * 60 + minutes
    text = (f"{name} practises piano {sessions} times a week for {hours} hour"
            f"{'s' if hours > 1 else ''} and {minutes} "
            f"minutes each time. How many minutes does {name} practise in a week?")  # fmt: skip
    steps = (f"Each session: {_calc(f'{hours}*60+{minutes}', each)} minutes.",
             f"A week: {_calc(f'{each}*{sessions}', each * sessions)} minutes.")  # fmt: skip
    return WordProblem("minutes", text, each * sessions, steps)


def _sharing(r: random.Random) -> WordProblem:
    name, friends, each, left = r.choice(NAMES), r.randint(2, 8), r.randint(2, 12), r.randint(1, 9)
    one, many = r.choice(ITEMS)
    total = (friends + 1) * each + left
    text = (f"{name} has {total} {many} and shares them equally with {friends} friends, "
            f"keeping an equal share too. {left} {many if left > 1 else one} "
            f"{'are' if left > 1 else 'is'} left over. "
            f"How many {many} does each person get?")  # fmt: skip
    steps = (f"People: {_calc(f'{friends}+1', friends + 1)}.",
             f"Shared: {_calc(f'{total}-{left}', total - left)}.",
             f"Each: {_calc(f'{total - left}/{friends + 1}', each)}.")  # fmt: skip
    return WordProblem("sharing", text, each, steps)


def _garden(r: random.Random) -> WordProblem:
    length, width, cost = r.randint(3, 20), r.randint(2, 15), r.randint(2, 9)
    perimeter = 2 * (length + width)
    text = (f"A rectangular garden is {length} metres long and {width} metres wide. Fencing "
            f"costs {cost} dollars per metre. How many dollars does it cost to fence the "
            "whole garden?")  # fmt: skip
    steps = (f"Perimeter: {_calc(f'2*({length}+{width})', perimeter)} m.",
             f"Cost: {_calc(f'{perimeter}*{cost}', perimeter * cost)} dollars.")  # fmt: skip
    return WordProblem("garden", text, perimeter * cost, steps)


TEMPLATES: dict[str, Callable[[random.Random], WordProblem]] = {
    "shopping": _shopping, "two_legs": _two_legs, "boxes": _boxes, "ribbon": _ribbon,
    "savings": _savings, "discount": _discount, "ages": _ages, "farm": _farm, "fuel": _fuel,
    "minutes": _minutes, "sharing": _sharing, "garden": _garden,
}  # fmt: skip


def generate(n: int, *, seed: int = 0, split: str = "all") -> list[WordProblem]:
    """``n`` distinct word problems, the templates taken in turn (shuffled), deterministic in
    ``seed``.

    Raises ValueError if the split cannot supply ``n`` distinct problems within a bounded
    number of draws (the space holds well over a million)."""
    if n < 1:
        raise ValueError("n must be at least 1")
    rng = random.Random(f"word_problems/{seed}/{split}")
    names = list(TEMPLATES)
    seen: set[str] = set()
    out: list[WordProblem] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > MAX_TRIES_PER_PROBLEM * n:
            raise ValueError(f"n {n}: only {len(out)} distinct problems found in split {split!r}")
        if tries % len(names) == 1:
            rng.shuffle(names)
        problem = TEMPLATES[names[tries % len(names)]](rng)
        if problem.text not in seen and in_split(problem.text, split):
            seen.add(problem.text)
            out.append(problem)
    return out
