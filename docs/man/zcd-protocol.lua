-- pandoc filter: docs/protocol.md -> zcd-protocol(7).
--
-- docs/protocol.md is the one description of the wire protocol (generated
-- from schema/); this filter only reshapes it into a manual page, so the
-- page cannot drift from it:
--   - the title becomes NAME and DESCRIPTION (whatis(1) and lexgrog(1)
--     read NAME), the numbered sections become .SH, their parts .SS;
--   - every table becomes a list of tagged paragraphs: tbl(1) squeezes the
--     five-column key tables into 80 columns a few letters wide and warns
--     that it cannot adjust them, while a tagged paragraph reads well at
--     any width;
--   - SEE ALSO is added.

local function text_of (cell)
  return pandoc.utils.stringify (cell.contents)
end

-- The inlines of a cell (its one Plain or Para), so `code` stays code.
local function inlines_of (cell)
  local out = pandoc.List ()
  for i, block in ipairs (cell.contents) do
    if i > 1 then
      out:insert (pandoc.Space ())
    end
    if block.content then
      out:extend (block.content)
    end
  end
  return out
end

local function rows_of (tbl)
  local rows = pandoc.List ()
  for _, body in ipairs (tbl.bodies) do
    rows:extend (body.body)
  end
  return rows
end

local function header_texts (tbl)
  local names = {}
  local head = tbl.head.rows[1]
  if head then
    for i, cell in ipairs (head.cells) do
      names[i] = text_of (cell)
    end
  end
  return names
end

-- | key | type | required | constraint | meaning |  (schema/gen.py)
--   -> `key` (type, required)  meaning; constraint: ...
local function key_item (cells)
  local term = inlines_of (cells[1])
  local note = text_of (cells[2])
  if text_of (cells[3]) == "yes" then
    note = note .. ", required"
  end
  term:extend ({ pandoc.Space (), pandoc.Str ("(" .. note .. ")") })
  local body = inlines_of (cells[5])
  if #text_of (cells[4]) > 0 then
    if #body > 0 then
      body:extend ({ pandoc.Str (";"), pandoc.Space () })
    end
    body:extend ({ pandoc.Str ("constraint:"), pandoc.Space () })
    body:extend (inlines_of (cells[4]))
  end
  if #body == 0 then
    body:insert (pandoc.Str ("-"))
  end
  return { term, { pandoc.Plain (body) } }
end

-- Any other table: the first cell is the tag; a second one is the text,
-- further ones are "header: value" parts of it.
local function plain_item (cells, names)
  local body = pandoc.List ()
  for i = 2, #cells do
    local part = inlines_of (cells[i])
    if #part > 0 then
      if #body > 0 then
        body:extend ({ pandoc.Str (";"), pandoc.Space () })
      end
      if #cells > 2 and names[i] and #names[i] > 0 then
        body:extend ({ pandoc.Str (names[i] .. ":"), pandoc.Space () })
      end
      body:extend (part)
    end
  end
  return { inlines_of (cells[1]), { pandoc.Plain (body) } }
end

function Table (tbl)
  local names = header_texts (tbl)
  local is_keys = names[1] == "key" and names[5] == "meaning"
  local items = pandoc.List ()
  for _, row in ipairs (rows_of (tbl)) do
    items:insert (is_keys and key_item (row.cells) or plain_item (row.cells, names))
  end
  return pandoc.DefinitionList (items)
end

local function see_also ()
  return {
    pandoc.Header (1, "SEE ALSO"),
    pandoc.Para ({
      pandoc.Strong ("zcd"), pandoc.Str ("(8),"), pandoc.Space (),
      pandoc.Strong ("zctr"), pandoc.Str ("(1),"), pandoc.Space (),
      pandoc.Strong ("zcd-oci"), pandoc.Str ("(8),"), pandoc.Space (),
      pandoc.Strong ("zcd-shim"), pandoc.Str ("(8),"), pandoc.Space (),
      pandoc.Strong ("zmq"), pandoc.Str ("(7)"),
    }),
    pandoc.Para (pandoc.Inlines (
      "This page is made from docs/protocol.md in the zcd source tree, which is "
      .. "generated from the machine-readable model in schema/protocol.json; "
      .. "the daemon's request validator is generated from the same model.")),
  }
end

function Pandoc (doc)
  local blocks = pandoc.List ()
  for _, block in ipairs (doc.blocks) do
    if block.t == "Header" and block.level == 1 then
      -- "zcd wire protocol, version 1"
      blocks:insert (pandoc.Header (1, "NAME"))
      blocks:insert (pandoc.Para (pandoc.Inlines ("zcd-protocol - "
                                                  .. pandoc.utils.stringify (block.content))))
      blocks:insert (pandoc.Header (1, "DESCRIPTION"))
    elseif block.t == "Header" and block.level == 2 then
      blocks:insert (pandoc.Header (1, pandoc.utils.stringify (block.content):upper ()))
    elseif block.t == "Header" then
      blocks:insert (pandoc.Header (2, block.content))
    elseif block.t ~= "RawBlock" then -- the generated-file banner (an HTML comment)
      blocks:insert (block)
    end
  end
  blocks:extend (see_also ())
  return pandoc.Pandoc (blocks, doc.meta)
end
