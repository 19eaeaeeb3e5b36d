"""The release: report.json, model card and page, the budget gate, device results recorded into a bundle."""
