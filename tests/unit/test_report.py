from pipeline.run.report import ImageRow, PlatformRow, Report


def test_markdown_lists_the_index_of_every_published_image_and_no_failed_one():
    report = Report(tag="v1", registry="h:5000/p", platforms=["linux/amd64"], concurrency=2)
    report.images = [
        ImageRow("a", "h:5000/p/a:v1", "published", digest="sha256:" + "1" * 64,
                 platforms=[PlatformRow("linux/amd64", "published", 1.0)]),
        ImageRow("b", "h:5000/p/b:v1", "failed", digest="sha256:" + "2" * 64, error="boom",
                 platforms=[PlatformRow("linux/amd64", "not-published", 1.0)]),
    ]  # fmt: skip
    text = report.to_markdown()
    assert f"- `h:5000/p/a:v1@sha256:{'1' * 64}`" in text
    assert "2" * 64 not in text
