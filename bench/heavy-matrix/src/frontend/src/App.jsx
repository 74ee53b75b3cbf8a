import React, { useState } from "react";

const SERVICES = ["backend", "jupyter", "ops-tools", "slurm", "gitea", "keycloak"];

export default function App() {
  const [filter, setFilter] = useState("");
  const shown = SERVICES.filter((s) => s.includes(filter));
  return (
    <main>
      <h1>heavy-matrix {__APP_VERSION__}</h1>
      <input value={filter} onChange={(e) => setFilter(e.target.value)} placeholder="filter" />
      <ul>
        {shown.map((s) => (
          <li key={s}>{s}</li>
        ))}
      </ul>
    </main>
  );
}
