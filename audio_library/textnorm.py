"""Vietnamese text normalisation for speech: numbers, times, dates and notice abbreviations
become the words a commune announcer would say."""

from __future__ import annotations

import re

DIGITS = ["không", "một", "hai", "ba", "bốn", "năm", "sáu", "bảy", "tám", "chín"]
ABBREVIATIONS = {
    "ANTT": "an ninh trật tự",
    "PCCC": "phòng cháy chữa cháy",
    "UBND": "ủy ban nhân dân",
    "HĐND": "hội đồng nhân dân",
    "MTTQ": "mặt trận tổ quốc",
    "TDP": "tổ dân phố",
    "CSGT": "cảnh sát giao thông",
    "ATGT": "an toàn giao thông",
    "TNGT": "tai nạn giao thông",
    "PCTT": "phòng chống thiên tai",
    "TKCN": "tìm kiếm cứu nạn",
    "BHYT": "bảo hiểm y tế",
    "THCS": "trung học cơ sở",
    "THPT": "trung học phổ thông",
    "SĐT": "số điện thoại",
    "CCCD": "căn cước công dân",
}
_SCALES = ["", "nghìn", "triệu", "tỷ"]


def _under_thousand(n: int, full: bool) -> list[str]:
    """0-999; `full` says a higher group precedes (so 5 -> 'không trăm linh năm')."""
    hundreds, rest = divmod(n, 100)
    tens, units = divmod(rest, 10)
    words: list[str] = []
    if hundreds or full:
        words += [DIGITS[hundreds], "trăm"]
    if tens == 0:
        if units and (hundreds or full):
            words.append("linh")
    elif tens == 1:
        words.append("mười")
    else:
        words += [DIGITS[tens], "mươi"]
    if units:
        if units == 1 and tens >= 2:
            words.append("mốt")
        elif units == 5 and tens >= 1:
            words.append("lăm")
        elif units == 4 and tens >= 2:
            words.append("tư")
        else:
            words.append(DIGITS[units])
    return words


def number_to_words(n: int) -> str:
    """Spell a whole number the way it is read aloud in Vietnamese."""
    if n < 0:
        return "âm " + number_to_words(-n)
    if n == 0:
        return DIGITS[0]
    if n >= 10**12:
        return " ".join(DIGITS[int(d)] for d in str(n))
    groups: list[int] = []
    while n:
        n, group = divmod(n, 1000)
        groups.append(group)
    words: list[str] = []
    for index in range(len(groups) - 1, -1, -1):
        group = groups[index]
        if group == 0:
            continue
        higher = index < len(groups) - 1
        words += _under_thousand(group, full=higher)
        if _SCALES[index]:
            words.append(_SCALES[index])
    return " ".join(words)


def _digits(text: str) -> str:
    return " ".join(DIGITS[int(d)] for d in text)


def _number_token(token: str) -> str:
    if len(token) >= 7 or (len(token) > 1 and token.startswith("0")):
        return _digits(token)  # phone numbers and codes: digit by digit
    return number_to_words(int(token))


def _date(match: re.Match[str]) -> str:
    day, month, year = match.group("d"), match.group("m"), match.group("y")
    if not (1 <= int(day) <= 31 and 1 <= int(month) <= 12):
        return match.group(0)
    word = match.group("pre") or "ngày"
    out = f"{word} {number_to_words(int(day))} tháng {number_to_words(int(month))}"
    if year:
        out += f" năm {number_to_words(int(year))}"
    return out


def _time(match: re.Match[str]) -> str:
    hour, minute = int(match.group("h")), match.group("min")
    if hour > 24 or (minute and int(minute) > 59):
        return match.group(0)
    out = f"{number_to_words(hour)} giờ"
    if minute and int(minute):
        out += f" {number_to_words(int(minute))} phút"
    return out


_DATE = re.compile(
    r"(?:\b(?P<pre>ngày)\s+)?\b(?P<d>\d{1,2})/(?P<m>\d{1,2})(?:/(?P<y>\d{4}))?\b", re.I
)
_TIME = re.compile(r"\b(?P<h>\d{1,2})(?:h|g|:)(?P<min>\d{2})?(?:p|')?(?!\d)")
_THOUSANDS = re.compile(r"\b\d{1,3}(?:\.\d{3})+\b")
_DECIMAL = re.compile(r"\b(\d+),(\d+)\b")
_PERCENT = re.compile(r"(\d)\s*%")
_NUMBER = re.compile(r"\d+")
_ABBR = re.compile(r"\b(" + "|".join(map(re.escape, ABBREVIATIONS)) + r")\b")


def normalise_vi(text: str) -> str:
    """Text ready for espeak-ng's Vietnamese voices."""
    out = _ABBR.sub(lambda m: ABBREVIATIONS[m.group(1)], text)
    out = _DATE.sub(_date, out)
    out = _TIME.sub(_time, out)
    out = _THOUSANDS.sub(lambda m: number_to_words(int(m.group(0).replace(".", ""))), out)
    out = _DECIMAL.sub(lambda m: f"{m.group(1)} phẩy {m.group(2)}", out)
    out = _PERCENT.sub(r"\1 phần trăm", out)
    out = out.replace("km/h", " ki lô mét một giờ")
    out = _NUMBER.sub(lambda m: _number_token(m.group(0)), out)
    return re.sub(r"[ \t]+", " ", out).strip()
